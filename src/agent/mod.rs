//! Beside the client process: the user's side of the desktop.
//!
//! - [`tray`]: the tray icon (`msc tray`).

pub mod tray;
