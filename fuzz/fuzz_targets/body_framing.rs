#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msc_io::fuzz::fuzz_body_framing(data));
