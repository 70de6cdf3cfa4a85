//! Tests of the tokenizer: unit tests on small hand-made vocabularies (always run) and the
//! comparison with llama.cpp's reference tokenizations of SmolLM2 (run when the model is there).

mod gguf_vocab;
mod json;
mod reference;
mod unit;
