#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chord_llm::fuzzing::chat_template(data));
