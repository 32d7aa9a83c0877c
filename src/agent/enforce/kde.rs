//! KDE: the system-wide `kioslaverc` (`/etc/xdg/kioslaverc`) gets a
//! `[Proxy Settings][$i]` group with `ProxyType=2` (automatic, PAC) and
//! `Proxy Config Script=<PAC URL>`. `[$i]` is KDE's kiosk marker: the group
//! is immutable, so entries in a user's `~/.config/kioslaverc` no longer
//! override it. Other groups and keys in the file are kept; removal restores
//! the group header and the two keys as they were.

use std::path::Path;

use super::files::Original;
use super::{Backend, Cx, any_exists};

pub const FILE: &str = "etc/xdg/kioslaverc";
const GROUP: &str = "Proxy Settings";
const LOCKED_HEADER: &str = "[Proxy Settings][$i]";

#[derive(Debug)]
pub struct Kde;

/// A kconfig file as groups of lines, comments and order kept.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ini {
    /// Lines before the first group.
    head: Vec<String>,
    groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    header: String,
    lines: Vec<String>,
}

impl Group {
    /// `[Proxy Settings][$i]` -> `Proxy Settings`.
    fn name(&self) -> &str {
        let h = self.header.trim();
        h.strip_prefix('[').and_then(|r| r.split(']').next()).unwrap_or(h)
    }

    fn key_of(line: &str) -> Option<&str> {
        let l = line.trim_start();
        if l.starts_with('#') || l.starts_with(';') {
            return None;
        }
        let (k, _) = l.split_once('=')?;
        // `Key[$i]=` (an immutable entry) is the same key.
        let k = k.trim();
        Some(k.strip_suffix("[$i]").unwrap_or(k).trim_end())
    }

    fn get(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .find(|l| Group::key_of(l) == Some(key))
            .map(|l| l.split_once('=').map(|(_, v)| v.to_string()).unwrap_or_default())
    }

    fn set(&mut self, key: &str, value: &str) {
        let line = format!("{key}={value}");
        match self.lines.iter().position(|l| Group::key_of(l) == Some(key)) {
            Some(i) => self.lines[i] = line,
            None => {
                // Before trailing blank lines.
                let at = self
                    .lines
                    .iter()
                    .rposition(|l| !l.trim().is_empty())
                    .map_or(0, |i| i + 1);
                self.lines.insert(at, line);
            }
        }
    }

    fn unset(&mut self, key: &str) {
        self.lines.retain(|l| Group::key_of(l) != Some(key));
    }

    fn has_keys(&self) -> bool {
        self.lines.iter().any(|l| Group::key_of(l).is_some())
    }
}

impl Ini {
    fn parse(text: &str) -> Ini {
        let mut ini = Ini {
            head: Vec::new(),
            groups: Vec::new(),
        };
        for line in text.lines() {
            if line.trim_start().starts_with('[') {
                ini.groups.push(Group {
                    header: line.trim().to_string(),
                    lines: Vec::new(),
                });
            } else if let Some(g) = ini.groups.last_mut() {
                g.lines.push(line.to_string());
            } else {
                ini.head.push(line.to_string());
            }
        }
        ini
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.head {
            s.push_str(l);
            s.push('\n');
        }
        for g in &self.groups {
            s.push_str(&g.header);
            s.push('\n');
            for l in &g.lines {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    fn group(&mut self) -> Option<&mut Group> {
        self.groups.iter_mut().find(|g| g.name() == GROUP)
    }
}

fn wanted(pac_url: &str) -> [(&'static str, String); 2] {
    [
        ("ProxyType", "2".to_string()),
        ("Proxy Config Script", pac_url.to_string()),
    ]
}

impl Backend for Kde {
    fn name(&self) -> &'static str {
        "kde"
    }

    fn detect(&self, root: &Path) -> bool {
        any_exists(
            root,
            &[
                "usr/bin/plasmashell",
                "usr/bin/kioclient5",
                "usr/bin/kioclient",
                "usr/bin/kded5",
                "usr/bin/kded6",
            ],
        )
    }

    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let cur = cx.files.read(FILE)?.unwrap_or_default();
        let mut ini = Ini::parse(&cur);
        if ini.group().is_none() {
            if ini
                .groups
                .last()
                .is_some_and(|g| g.lines.last().is_some_and(|l| !l.trim().is_empty()))
            {
                ini.groups.last_mut().expect("checked").lines.push(String::new());
            }
            ini.groups.push(Group {
                header: LOCKED_HEADER.into(),
                lines: Vec::new(),
            });
        }
        let g = ini.group().expect("ensured");
        g.header = LOCKED_HEADER.into();
        for (k, v) in wanted(&cx.settings.pac_url) {
            g.set(k, &v);
        }
        cx.files.write(FILE, &ini.render())?;
        Ok(())
    }

    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>> {
        let Some(cur) = cx.files.read(FILE)? else {
            return Ok(vec![format!("/{FILE}: missing")]);
        };
        let mut ini = Ini::parse(&cur);
        let Some(g) = ini.group() else {
            return Ok(vec![format!("/{FILE}: [{GROUP}] missing")]);
        };
        let mut found = Vec::new();
        if g.header != LOCKED_HEADER {
            found.push(format!("/{FILE}: [{GROUP}] not locked (header was {})", g.header));
        }
        for (k, v) in wanted(&cx.settings.pac_url) {
            let got = g.get(k);
            if got.as_deref() != Some(v.as_str()) {
                found.push(format!("/{FILE}: {k} was {}", got.unwrap_or_else(|| "unset".into())));
            }
        }
        Ok(found)
    }

    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let Some(orig) = cx.files.original(FILE).cloned() else {
            return Ok(());
        };
        let orig_text = match &orig {
            Original::Text(t) => t.clone(),
            _ => String::new(),
        };
        let Some(cur) = cx.files.read(FILE)? else {
            return cx.files.restore(FILE);
        };
        let mut orig_ini = Ini::parse(&orig_text);
        let orig_group = orig_ini.group().cloned();
        let mut ini = Ini::parse(&cur);
        if let Some(g) = ini.group() {
            for (k, _) in wanted("") {
                match orig_group.as_ref().and_then(|o| o.get(k)) {
                    Some(v) => g.set(k, &v),
                    None => g.unset(k),
                }
            }
            match &orig_group {
                Some(o) => g.header = o.header.clone(),
                None => g.header = format!("[{GROUP}]"),
            }
            if orig_group.is_none() && !g.has_keys() {
                ini.groups.retain(|g| g.name() != GROUP);
                // The blank line apply put before the group.
                if let Some(last) = ini.groups.last_mut()
                    && last.lines.last().is_some_and(|l| l.trim().is_empty())
                    && !orig_text.ends_with("\n\n")
                {
                    last.lines.pop();
                }
            }
        }
        let text = ini.render();
        if text == orig_text || (orig == Original::Absent && text.trim().is_empty()) {
            cx.files.restore(FILE)
        } else {
            cx.files.write(FILE, &text)?;
            cx.files.forget(FILE);
            Ok(())
        }
    }
}
