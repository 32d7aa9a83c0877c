//! msc-pac: turns proxy rules into Proxy Auto-Configuration (PAC) text.
//!
//! Pure code: no async, no IO, no dependency on the rest of the workspace.
#![forbid(unsafe_code)]
