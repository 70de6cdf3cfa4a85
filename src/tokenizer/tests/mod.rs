//! Tests of the tokenizer: unit tests on small hand-made vocabularies (always run) and the
//! comparison with llama.cpp's reference tokenizations of real vocabularies (run when their
//! GGUF files are on this machine).

mod gguf_vocab;
mod json;
mod reference;
mod unit;
mod unit_pretokenize;
mod unit_spm;
