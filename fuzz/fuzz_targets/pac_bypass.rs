#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msc_pac::fuzz::fuzz_bypass(data));
