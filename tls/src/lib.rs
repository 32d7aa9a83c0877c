//! msc-tls
