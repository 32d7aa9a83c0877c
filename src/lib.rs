//! msc: the mobile security client and its gateway.
#![forbid(unsafe_code)]
