//! Command-line tools: `http_proxy`, `https_proxy` and `no_proxy` (lower and
//! upper case; curl, wget, apt, pip, git and Go programs read one or the
//! other) pointing at slot 1 of the client, since these tools do not read
//! PAC. The PAC bypass list becomes `no_proxy` where an equivalent exists
//! (exact hosts, domains, CIDR ranges); URL and host patterns have none.
//!
//! Two files of msc's own: `/etc/profile.d/msc-proxy.sh` (login shells) and
//! `/etc/environment.d/90-msc-proxy.conf` (the systemd user manager, hence
//! graphical sessions). Per-user exceptions are honoured in the shell script
//! (it skips the listed users); environment.d has no per-user form, so with
//! a per-user exception that file is not written.

use std::path::Path;

use super::{Backend, Cx};

pub const PROFILE: &str = "etc/profile.d/msc-proxy.sh";
pub const ENVIRONMENT_D: &str = "etc/environment.d/90-msc-proxy.conf";

#[derive(Debug)]
pub struct Env;

/// The variables, in the order written.
pub fn variables(cx: &Cx<'_>) -> anyhow::Result<Vec<(String, String)>> {
    let s = cx.settings;
    let (Some(http), Some(https)) = (&s.http_proxy, &s.https_proxy) else {
        anyhow::bail!("slot 1's ports are chosen at start-up: nothing to write into http_proxy");
    };
    let no = s.no_proxy.join(",");
    let mut v = Vec::new();
    for (k, val) in [("http_proxy", http), ("https_proxy", https), ("no_proxy", &no)] {
        v.push((k.to_string(), val.clone()));
        v.push((k.to_ascii_uppercase(), val.clone()));
    }
    Ok(v)
}

fn profile_text(cx: &Cx<'_>) -> anyhow::Result<String> {
    let vars = variables(cx)?;
    let mut s = String::from(
        "# Written by msc (proxy enforcement): command-line tools use the msc client.\n\
         # Removed by `msc enforce --remove`; see docs/enforcement.md.\n",
    );
    if !cx.settings.no_proxy_skipped.is_empty() {
        s.push_str(&format!(
            "# PAC bypass entries with no no_proxy form (these go through the client): {}\n",
            cx.settings.no_proxy_skipped.join(" ")
        ));
    }
    let exports: String = vars.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    let users: Vec<&str> = cx.exceptions.iter().filter_map(|x| x.user.as_deref()).collect();
    if users.is_empty() {
        s.push_str(&exports);
    } else {
        for x in cx.exceptions.iter().filter(|x| x.user.is_some()) {
            s.push_str(&format!(
                "# exception for {}: {}\n",
                x.user.as_deref().unwrap_or_default(),
                x.reason.replace('\n', " ")
            ));
        }
        s.push_str(&format!(
            "case \"$(id -un 2>/dev/null)\" in\n  {}) ;;\n  *)\n",
            users.join("|")
        ));
        for l in exports.lines() {
            s.push_str(&format!("    {l}\n"));
        }
        s.push_str("    ;;\nesac\n");
    }
    Ok(s)
}

fn environment_d_text(cx: &Cx<'_>) -> anyhow::Result<Option<String>> {
    if cx.exceptions.iter().any(|x| x.user.is_some()) {
        return Ok(None);
    }
    let mut s = String::from("# Written by msc (proxy enforcement); see docs/enforcement.md.\n");
    for (k, v) in variables(cx)? {
        s.push_str(&format!("{k}={v}\n"));
    }
    Ok(Some(s))
}

impl Backend for Env {
    fn name(&self) -> &'static str {
        "env"
    }

    /// Every machine has command-line tools.
    fn detect(&self, _root: &Path) -> bool {
        true
    }

    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let p = profile_text(cx)?;
        cx.files.write(PROFILE, &p)?;
        match environment_d_text(cx)? {
            Some(t) => {
                cx.files.write(ENVIRONMENT_D, &t)?;
            }
            None => cx.files.restore(ENVIRONMENT_D)?,
        }
        Ok(())
    }

    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        let want = [
            (PROFILE, Some(profile_text(cx)?)),
            (ENVIRONMENT_D, environment_d_text(cx)?),
        ];
        for (f, w) in want {
            let Some(w) = w else { continue };
            match cx.files.read(f)? {
                None => found.push(format!("/{f}: missing")),
                Some(t) if t != w => found.push(format!("/{f}: content changed")),
                Some(_) => {}
            }
        }
        Ok(found)
    }

    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        cx.files.restore(PROFILE)?;
        cx.files.restore(ENVIRONMENT_D)
    }
}
