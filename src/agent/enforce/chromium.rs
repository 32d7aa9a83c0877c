//! Chromium and Google Chrome: a managed policy file of msc's own
//! (`ProxyMode: pac_script`, `ProxyPacUrl`) in each browser's managed policy
//! directory. Managed policies are mandatory: the browser shows the proxy
//! settings as set by the administrator and users cannot change them.

use std::path::Path;

use serde_json::{Value, json};

use super::{Backend, Cx, any_exists};

/// The policy files msc owns (Chromium, Chrome).
pub const FILES: &[&str] = &[
    "etc/chromium/policies/managed/msc.json",
    "etc/opt/chrome/policies/managed/msc.json",
];

#[derive(Debug)]
pub struct Chromium;

fn policy(pac_url: &str) -> Value {
    json!({ "ProxyMode": "pac_script", "ProxyPacUrl": pac_url })
}

impl Backend for Chromium {
    fn name(&self) -> &'static str {
        "chromium"
    }

    fn detect(&self, root: &Path) -> bool {
        any_exists(
            root,
            &[
                "usr/bin/chromium",
                "usr/lib/chromium",
                "etc/chromium",
                "opt/google/chrome",
                "etc/opt/chrome",
            ],
        )
    }

    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&policy(&cx.settings.pac_url))? + "\n";
        for f in FILES {
            cx.files.write(f, &text)?;
        }
        Ok(())
    }

    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>> {
        let want = policy(&cx.settings.pac_url);
        let mut found = Vec::new();
        for f in FILES {
            match cx.files.read(f)? {
                None => found.push(format!("/{f}: missing")),
                Some(t) => match serde_json::from_str::<Value>(&t) {
                    Err(e) => found.push(format!("/{f}: not JSON ({e})")),
                    Ok(v) => {
                        for (k, w) in want.as_object().into_iter().flatten() {
                            if v.get(k) != Some(w) {
                                found.push(format!(
                                    "/{f}: {k} was {}",
                                    v.get(k).map_or("unset".to_string(), |x| x.to_string())
                                ));
                            }
                        }
                        if v.as_object().is_some_and(|o| o.len() != 2) {
                            found.push(format!("/{f}: other policies added"));
                        }
                    }
                },
            }
        }
        Ok(found)
    }

    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        for f in FILES {
            cx.files.restore(f)?;
        }
        Ok(())
    }
}
