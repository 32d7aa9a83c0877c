//! msc-io
