#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msc::fuzz::fuzz_config(data));
