#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msc_tls::fuzz::fuzz_record_open(data));
