//! Beside the client process, never on its data path: what keeps a laptop
//! pointed at `msc run`. [`enforce`]: the proxy-settings backends (GNOME,
//! KDE, Firefox, Chromium, command-line tools) and their check-and-restore
//! loop. Nothing here may block or slow the client's workers.

pub mod enforce;
