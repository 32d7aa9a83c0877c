//! Firefox: the enterprise policy `Proxy` (`Mode: autoConfig`,
//! `AutoConfigURL`, `Locked: true`) merged into `policies.json`: in
//! `/etc/firefox/policies/` (read by Firefox on Linux) and in the
//! `distribution/` directory of each Firefox installation found (Debian's
//! firefox-esr reads only that one). Other policies in the file are kept;
//! removal takes out only msc's keys and puts back what they were.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::files::Original;
use super::{Backend, Cx, any_exists};

/// Always written.
pub const SYSTEM_FILE: &str = "etc/firefox/policies/policies.json";
/// Installation directories; `<dir>/distribution/policies.json` is written
/// for each one that exists.
pub const INSTALL_DIRS: &[&str] = &["usr/lib/firefox-esr", "usr/lib/firefox"];

/// The keys of `policies.Proxy` msc sets.
const KEYS: &[&str] = &["Mode", "AutoConfigURL", "Locked"];

#[derive(Debug)]
pub struct Firefox;

fn targets(root: &Path) -> Vec<String> {
    let mut v = vec![SYSTEM_FILE.to_string()];
    for d in INSTALL_DIRS {
        if root.join(d).is_dir() {
            v.push(format!("{d}/distribution/policies.json"));
        }
    }
    v
}

fn want(pac_url: &str) -> Value {
    json!({ "Mode": "autoConfig", "AutoConfigURL": pac_url, "Locked": true })
}

fn parse(rel: &str, text: Option<&str>) -> anyhow::Result<Value> {
    match text {
        None => Ok(json!({})),
        Some(t) if t.trim().is_empty() => Ok(json!({})),
        Some(t) => {
            let v: Value = serde_json::from_str(t).with_context(|| format!("/{rel}: not JSON; left as it is"))?;
            anyhow::ensure!(v.is_object(), "/{rel}: not a JSON object; left as it is");
            Ok(v)
        }
    }
}

fn proxy_mut<'a>(v: &'a mut Value, rel: &str) -> anyhow::Result<&'a mut Map<String, Value>> {
    let top = v.as_object_mut().context("not an object")?;
    let policies = top.entry("policies").or_insert_with(|| json!({}));
    let policies = policies
        .as_object_mut()
        .with_context(|| format!("/{rel}: \"policies\" is not an object; left as it is"))?;
    let proxy = policies.entry("Proxy").or_insert_with(|| json!({}));
    if !proxy.is_object() {
        *proxy = json!({});
    }
    Ok(proxy.as_object_mut().expect("just made an object"))
}

impl Backend for Firefox {
    fn name(&self) -> &'static str {
        "firefox"
    }

    fn detect(&self, root: &Path) -> bool {
        any_exists(
            root,
            &[
                "usr/lib/firefox-esr",
                "usr/lib/firefox",
                "usr/bin/firefox",
                "usr/bin/firefox-esr",
                "etc/firefox",
            ],
        )
    }

    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        let w = want(&cx.settings.pac_url);
        for rel in targets(cx.root()) {
            let cur = cx.files.read(&rel)?;
            let mut v = parse(&rel, cur.as_deref())?;
            let proxy = proxy_mut(&mut v, &rel)?;
            for k in KEYS {
                proxy.insert(k.to_string(), w[k].clone());
            }
            let text = serde_json::to_string_pretty(&v)? + "\n";
            if parse(&rel, cur.as_deref())? != v {
                cx.files.write(&rel, &text)?;
            } else {
                cx.files.remember(&rel)?;
            }
        }
        Ok(())
    }

    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>> {
        let w = want(&cx.settings.pac_url);
        let mut found = Vec::new();
        for rel in targets(cx.root()) {
            let Some(t) = cx.files.read(&rel)? else {
                found.push(format!("/{rel}: missing"));
                continue;
            };
            let v = match parse(&rel, Some(&t)) {
                Ok(v) => v,
                Err(e) => {
                    found.push(format!("{e:#}"));
                    continue;
                }
            };
            for k in KEYS {
                let got = v.pointer(&format!("/policies/Proxy/{k}"));
                if got != Some(&w[k]) {
                    found.push(format!(
                        "/{rel}: policies.Proxy.{k} was {}",
                        got.map_or("unset".to_string(), |x| x.to_string())
                    ));
                }
            }
        }
        Ok(found)
    }

    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()> {
        // Every file msc wrote, also in an installation removed since.
        let mut all = targets(cx.root());
        for r in cx.files.recorded(|r| {
            r == SYSTEM_FILE
                || INSTALL_DIRS
                    .iter()
                    .any(|d| r == format!("{d}/distribution/policies.json"))
        }) {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        for rel in all {
            let Some(orig) = cx.files.original(&rel).cloned() else {
                continue;
            };
            let orig_text = match &orig {
                Original::Text(t) => Some(t.clone()),
                _ => None,
            };
            let orig_v = parse(&rel, orig_text.as_deref()).unwrap_or_else(|_| json!({}));
            let Some(cur) = cx.files.read(&rel)? else {
                cx.files.restore(&rel)?;
                continue;
            };
            let Ok(mut v) = parse(&rel, Some(&cur)) else {
                // Someone replaced it with something that is not JSON: theirs now.
                cx.files.forget(&rel);
                continue;
            };
            // Take out msc's keys, putting back what the original had.
            let orig_proxy = orig_v.pointer("/policies/Proxy").cloned();
            {
                let proxy = proxy_mut(&mut v, &rel)?;
                for k in KEYS {
                    match orig_proxy.as_ref().and_then(|p| p.get(k)) {
                        Some(o) => {
                            proxy.insert(k.to_string(), o.clone());
                        }
                        None => {
                            proxy.remove(*k);
                        }
                    }
                }
            }
            if orig_proxy.is_none() {
                let policies = v["policies"].as_object_mut().expect("made by proxy_mut");
                if policies
                    .get("Proxy")
                    .and_then(Value::as_object)
                    .is_some_and(Map::is_empty)
                {
                    policies.remove("Proxy");
                }
                if orig_v.get("policies").is_none() && policies.is_empty() {
                    v.as_object_mut().expect("object").remove("policies");
                }
            }
            if v == orig_v {
                // Exactly as before, byte for byte.
                cx.files.restore(&rel)?;
            } else {
                let text = serde_json::to_string_pretty(&v)? + "\n";
                cx.files.write(&rel, &text)?;
                cx.files.forget(&rel);
            }
        }
        Ok(())
    }
}
