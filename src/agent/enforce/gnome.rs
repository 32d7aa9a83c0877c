//! GNOME (and every GSettings program): `org.gnome.system.proxy` `mode`
//! `'auto'` and `autoconfig-url` = the PAC, locked in a dconf system
//! database so users cannot change them:
//!
//! - `/etc/dconf/profile/user` lists `system-db:local` (created as
//!   `user-db:user` + `system-db:local` if absent, the line added if not);
//! - `/etc/dconf/db/local.d/00-msc`: the two keys;
//! - `/etc/dconf/db/local.d/locks/00-msc`: their lock;
//! - `dconf update` compiles `/etc/dconf/db/local`.
//!
//! For users already logged in (a session bus at `/run/user/UID/bus`), the
//! keys are also set with `gsettings` in their session while they are still
//! writable there (their programs read the new lock only once they reopen the
//! database), and each user's previous values are put back on removal.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::files::Original;
use super::{Backend, Cx, run};

pub const PROFILE: &str = "etc/dconf/profile/user";
pub const KEYFILE: &str = "etc/dconf/db/local.d/00-msc";
pub const LOCKS: &str = "etc/dconf/db/local.d/locks/00-msc";
pub const DB: &str = "etc/dconf/db/local";
const DB_DIR: &str = "etc/dconf/db";
const KEYFILE_DIR: &str = "etc/dconf/db/local.d";
const SCHEMA: &str = "org.gnome.system.proxy";
const SYSTEM_DB_LINE: &str = "system-db:local";

#[derive(Debug)]
pub struct Gnome;

/// GVariant text for a string.
fn gvariant_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn keyfile(pac_url: &str) -> String {
    format!(
        "# Written by msc (proxy enforcement); removed by `msc enforce --remove`.\n\
         [system/proxy]\nmode='auto'\nautoconfig-url={}\n",
        gvariant_str(pac_url)
    )
}

const LOCKS_TEXT: &str = "# Written by msc (proxy enforcement).\n/system/proxy/mode\n/system/proxy/autoconfig-url\n";

/// The keys msc sets, with their GVariant text.
fn keys(pac_url: &str) -> [(&'static str, String); 2] {
    [
        ("mode", gvariant_str("auto")),
        ("autoconfig-url", gvariant_str(pac_url)),
    ]
}

/// A logged-in user's session bus.
#[derive(Debug)]
struct Session {
    uid: u32,
    gid: u32,
    bus: PathBuf,
    runtime: PathBuf,
}

impl Session {
    fn all(root: &Path) -> Vec<Session> {
        let Ok(rd) = std::fs::read_dir(root.join("run/user")) else {
            return Vec::new();
        };
        let mut v: Vec<Session> = rd
            .flatten()
            .filter_map(|e| {
                let uid: u32 = e.file_name().to_str()?.parse().ok()?;
                let runtime = e.path();
                let bus = runtime.join("bus");
                bus.exists().then_some(())?;
                let gid = std::fs::metadata(&runtime).ok()?.gid();
                Some(Session { uid, gid, bus, runtime })
            })
            .collect();
        v.sort_by_key(|s| s.uid);
        v
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let addr = format!("unix:path={}", self.bus.display());
        let runtime = self.runtime.display().to_string();
        let envs = [
            ("DBUS_SESSION_BUS_ADDRESS", addr.as_str()),
            ("XDG_RUNTIME_DIR", runtime.as_str()),
            ("GSETTINGS_BACKEND", "dconf"),
        ];
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        let as_user = (self.uid != me).then_some((self.uid, self.gid));
        run(program, args, &envs, as_user).with_context(|| format!("session of uid {}", self.uid))
    }

    fn get(&self, key: &str) -> anyhow::Result<String> {
        Ok(self.run("gsettings", &["get", SCHEMA, key])?.trim().to_string())
    }

    fn writable(&self, key: &str) -> anyhow::Result<bool> {
        Ok(self.run("gsettings", &["writable", SCHEMA, key])?.trim() == "true")
    }

    fn value_key(&self, key: &str) -> String {
        format!("gnome/{}/{key}", self.uid)
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn db_fresh(root: &Path) -> bool {
    let Some(db) = mtime(&root.join(DB)) else {
        return false;
    };
    [KEYFILE, LOCKS]
        .iter()
        .all(|f| mtime(&root.join(f)).is_some_and(|m| m <= db))
}

fn dconf_update(root: &Path) -> anyhow::Result<()> {
    let dir = root.join(DB_DIR);
    run("dconf", &["update", &dir.display().to_string()], &[], None)?;
    Ok(())
}

fn has_line(text: &str) -> bool {
    text.lines().any(|l| l.trim() == SYSTEM_DB_LINE)
}

impl Backend for Gnome {
    fn name(&self) -> &'static str {
        "gnome"
    }

    fn detect(&self, root: &Path) -> bool {
        root.join("usr/share/glib-2.0/schemas/org.gnome.system.proxy.gschema.xml")
            .exists()
    }

    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let url = cx.settings.pac_url.clone();
        let root = cx.root().to_path_buf();
        // Sessions first: their own values are recorded before the lock
        // hides them.
        let mut errors = Vec::new();
        for s in Session::all(&root) {
            let r = (|| -> anyhow::Result<()> {
                for (k, v) in keys(&url) {
                    if !s.writable(k)? {
                        continue;
                    }
                    if cx.files.value(&s.value_key(k)).is_none() {
                        let before = s.run("dconf", &["read", &format!("/system/proxy/{k}")])?;
                        let before = before.trim();
                        cx.files
                            .set_value(&s.value_key(k), (!before.is_empty()).then(|| before.to_string()));
                    }
                    if s.get(k)? != v {
                        s.run("gsettings", &["set", SCHEMA, k, &v])?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = r {
                errors.push(format!("{e:#}"));
            }
        }
        // The system database and its lock.
        let mut changed = false;
        cx.files.remember(PROFILE)?;
        let profile = cx.files.read(PROFILE)?;
        match profile {
            None => changed |= cx.files.write(PROFILE, &format!("user-db:user\n{SYSTEM_DB_LINE}\n"))?,
            Some(t) if !has_line(&t) => {
                let mut t = t;
                if !t.is_empty() && !t.ends_with('\n') {
                    t.push('\n');
                }
                t.push_str(SYSTEM_DB_LINE);
                t.push('\n');
                changed |= cx.files.write(PROFILE, &t)?;
            }
            Some(_) => {}
        }
        changed |= cx.files.write(KEYFILE, &keyfile(&url))?;
        changed |= cx.files.write(LOCKS, LOCKS_TEXT)?;
        cx.files.remember_generated(DB);
        if changed || !db_fresh(&root) {
            dconf_update(&root)?;
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>> {
        let url = cx.settings.pac_url.clone();
        let root = cx.root().to_path_buf();
        let mut found = Vec::new();
        match cx.files.read(PROFILE)? {
            Some(t) if has_line(&t) => {}
            Some(_) => found.push(format!("/{PROFILE}: {SYSTEM_DB_LINE} missing")),
            None => found.push(format!("/{PROFILE}: missing")),
        }
        for (f, want) in [(KEYFILE, keyfile(&url)), (LOCKS, LOCKS_TEXT.to_string())] {
            match cx.files.read(f)? {
                None => found.push(format!("/{f}: missing")),
                Some(t) if t != want => found.push(format!("/{f}: content changed")),
                Some(_) => {}
            }
        }
        if !db_fresh(&root) {
            found.push(format!("/{DB}: missing or older than its keyfiles"));
        }
        for s in Session::all(&root) {
            for (k, v) in keys(&url) {
                match s.get(k) {
                    Ok(got) if got == v => {}
                    Ok(got) => found.push(format!("uid {}: {SCHEMA} {k} was {got}", s.uid)),
                    Err(e) => found.push(format!("uid {}: {e:#}", s.uid)),
                }
            }
        }
        Ok(found)
    }

    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let root = cx.root().to_path_buf();
        cx.files.restore(KEYFILE)?;
        cx.files.restore(LOCKS)?;
        if let Some(orig) = cx.files.original(PROFILE).cloned() {
            match (&orig, cx.files.read(PROFILE)?) {
                (_, None) => cx.files.restore(PROFILE)?,
                (Original::Text(o), Some(_)) if has_line(o) => cx.files.forget(PROFILE),
                (_, Some(cur)) => {
                    let kept: String = cur
                        .lines()
                        .filter(|l| l.trim() != SYSTEM_DB_LINE)
                        .map(|l| format!("{l}\n"))
                        .collect();
                    let same = match &orig {
                        Original::Absent => kept.trim() == "user-db:user" || kept.trim().is_empty(),
                        Original::Text(o) => kept == *o || kept.trim_end() == o.trim_end(),
                        Original::Binary => false,
                    };
                    if same {
                        cx.files.restore(PROFILE)?;
                    } else {
                        cx.files.write(PROFILE, &kept)?;
                        cx.files.forget(PROFILE);
                    }
                }
            }
        }
        // The compiled database: gone if msc made it and nothing else feeds
        // it, else recompiled without msc's keyfiles.
        let others = std::fs::read_dir(root.join(KEYFILE_DIR))
            .map(|rd| rd.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_file())))
            .unwrap_or(false);
        match cx.files.original(DB) {
            Some(Original::Absent) if !others => super::files::remove_file(&root.join(DB))?,
            Some(_) => dconf_update(&root)?,
            None => {}
        }
        cx.files.forget(DB);
        // Sessions: each user's values as they were.
        for s in Session::all(&root) {
            for (k, _) in keys("") {
                let vk = s.value_key(k);
                let Some(before) = cx.files.value(&vk).cloned() else {
                    continue;
                };
                let path = format!("/system/proxy/{k}");
                match before {
                    None => s.run("dconf", &["reset", &path])?,
                    Some(v) => s.run("dconf", &["write", &path, &v])?,
                };
                cx.files.forget_value(&vk);
            }
        }
        // Users who logged out meanwhile keep msc's value in their own
        // database (no session to write through); nothing to restore here.
        for k in cx.files.values_with_prefix("gnome/") {
            cx.files.forget_value(&k);
        }
        Ok(())
    }
}
