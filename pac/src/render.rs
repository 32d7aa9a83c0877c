//! PAC text generation.
//!
//! Every piece of admin-derived text reaches the script through [`js_str`]
//! (string literals) or as a decimal integer; nothing is pasted raw, so even a
//! validation gap could not turn data into code.
//!
//! The script is plain ES3 (which is also valid ES5): pacparser still embeds
//! SpiderMonkey 1.7 and Windows' WinHTTP uses JScript, so no `Array.indexOf`,
//! `Object.create`, `JSON`, `let` or trailing commas.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::Pac;
use crate::bypass::BypassRule;
use crate::net::{NON_ROUTABLE_V6, merge_intervals, non_routable_v4_intervals};

/// Quotes `s` as a JavaScript string literal. Only characters that are inert
/// in every context (JS string, HTML, regex source after `RegExp`) pass
/// through; a backslash becomes `\\`, and everything else, including `"`,
/// `'`, `<`, `>`, line and paragraph separators and all non-ASCII, becomes a
/// `\uXXXX` escape.
pub(crate) fn js_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for unit in s.encode_utf16() {
        match u8::try_from(unit) {
            Ok(b) if is_inert(b) => out.push(char::from(b)),
            // Readable form for the regex sources, where backslashes abound.
            Ok(b'\\') => out.push_str("\\\\"),
            _ => {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out.push('"');
    out
}

fn is_inert(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'!'
                | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'-'
                | b'.'
                | b'/'
                | b':'
                | b';'
                | b'='
                | b'?'
                | b'@'
                | b'['
                | b']'
                | b'^'
                | b'_'
                | b'|'
                | b'~'
        )
}

/// Turns a validated glob into regular-expression source with the same
/// meaning as `shExpMatch`: `*` any run, `?` one character, the rest literal.
/// `[\s\S]` rather than `.` so a wildcard also spans characters `.` skips.
fn glob_to_regex(p: &str, out: &mut String) {
    for c in p.chars() {
        match c {
            '*' => out.push_str(r"[\s\S]*"),
            '?' => out.push_str(r"[\s\S]"),
            '.' | '+' | '$' | '(' | ')' | '[' | ']' | '^' | '{' | '}' | '|' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// One anchored alternation for all globs of a kind: compiled once when the
/// PAC loads, instead of one `shExpMatch` (which builds a fresh RegExp on each
/// call in common engines) per pattern per request.
fn combined_regex<'a>(patterns: impl Iterator<Item = &'a String>) -> String {
    let mut src = String::from("^(?:");
    for (i, p) in patterns.enumerate() {
        if i > 0 {
            src.push('|');
        }
        glob_to_regex(p, &mut src);
    }
    src.push_str(")$");
    src
}

/// Helper functions shared by every PAC. Names carry an `msc` prefix so they
/// cannot collide with an engine's own helpers.
const HELPERS: &str = r#"// Canonical dotted quads only: with leading zeros, resolvers read octal
// (0177.0.0.1 is 127.0.0.1), so such hosts are left to dnsResolve.
var mscRe4 = /^(0|[1-9]\d?\d?)\.(0|[1-9]\d?\d?)\.(0|[1-9]\d?\d?)\.(0|[1-9]\d?\d?)$/;
var mscReHex = /^[0-9a-f]{1,4}$/;

// IPv4 text -> integer; -1 when not four dotted numbers, -2 when it looks
// like an address but an octet exceeds 255 (still a literal: never resolved).
function mscV4(s) {
  var m = mscRe4.exec(s);
  if (m === null) return -1;
  var a = +m[1], b = +m[2], c = +m[3], d = +m[4];
  if (a > 255 || b > 255 || c > 255 || d > 255) return -2;
  return ((a * 256 + b) * 256 + c) * 256 + d;
}

// IPv6 text (lower case, no brackets) -> array of 8 numbers, or null.
function mscV6(s) {
  var i = s.indexOf("%"), j, n;
  if (i >= 0) s = s.substring(0, i);
  i = s.lastIndexOf(":");
  if (i < 0) return null;
  if (s.indexOf(".", i) > i) {
    n = mscV4(s.substring(i + 1));
    if (n < 0) return null;
    s = s.substring(0, i + 1) + Math.floor(n / 65536).toString(16) + ":" + (n % 65536).toString(16);
  }
  var parts = s.split("::");
  if (parts.length > 2) return null;
  var head = parts[0] === "" ? [] : parts[0].split(":");
  var tail = (parts.length === 2 && parts[1] !== "") ? parts[1].split(":") : [];
  var fill = 8 - head.length - tail.length;
  if (parts.length === 2 ? fill < 1 : fill !== 0) return null;
  var g = [];
  for (j = 0; j < head.length; j++) g.push(head[j]);
  for (j = 0; j < fill; j++) g.push("0");
  for (j = 0; j < tail.length; j++) g.push(tail[j]);
  for (j = 0; j < 8; j++) {
    if (!mscReHex.test(g[j])) return null;
    g[j] = parseInt(g[j], 16);
  }
  return g;
}

// ::ffff:a.b.c.d names an IPv4 host; returns its integer, or -1.
function mscMapped(g) {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 65535)
    return g[6] * 65536 + g[7];
  return -1;
}

// Binary search over sorted, disjoint [first, last, first, last, ...].
function mscIn4(n, t) {
  var lo = 0, hi = t.length / 2 - 1, m;
  while (lo <= hi) {
    m = (lo + hi) >> 1;
    if (n < t[2 * m]) hi = m - 1;
    else if (n > t[2 * m + 1]) lo = m + 1;
    else return true;
  }
  return false;
}

// t is [prefix, 8 groups, prefix, 8 groups, ...].
function mscIn6(g, t) {
  for (var i = 0; i < t.length; i += 9) {
    var p = t[i], j = 0;
    while (p >= 16 && g[j] === t[i + 1 + j]) { p -= 16; j++; }
    if (p === 0 || (p < 16 && (g[j] >> (16 - p)) === (t[i + 1 + j] >> (16 - p)))) return true;
  }
  return false;
}

// For an address returned by dnsResolve (IPv4, or IPv6 in some engines).
function mscNonRoutable(r) {
  var n, g;
  if (r.indexOf(":") < 0) {
    n = mscV4(r);
    return n >= 0 && mscIn4(n, mscNR4);
  }
  g = mscV6(r.toLowerCase());
  if (g === null) return false;
  n = mscMapped(g);
  return n >= 0 ? mscIn4(n, mscNR4) : mscIn6(g, mscNR6);
}
"#;

fn push_v4_table(out: &mut String, name: &str, intervals: &[(u32, u32)]) {
    let _ = write!(out, "var {name} = [");
    for (i, (lo, hi)) in intervals.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{lo}, {hi}");
    }
    out.push_str("];\n");
}

fn push_v6_table<'a>(out: &mut String, name: &str, nets: impl Iterator<Item = (&'a [u16; 8], u8)>) {
    let _ = write!(out, "var {name} = [");
    for (i, (groups, prefix)) in nets.enumerate() {
        if i > 0 {
            out.push_str(",\n  ");
        }
        let _ = write!(out, "{prefix}");
        for g in groups {
            let _ = write!(out, ", {g}");
        }
    }
    out.push_str("];\n");
}

fn push_name_table<'a>(out: &mut String, name: &str, keys: impl Iterator<Item = &'a String>) {
    // Values are `true` and lookups test `=== true`: inherited or magic keys
    // (`constructor`, `__count__`, ...) never hold exactly `true`.
    let _ = write!(out, "var {name} = {{");
    for (i, k) in keys.enumerate() {
        out.push_str(if i > 0 { ",\n  " } else { "\n  " });
        out.push_str(&js_str(k));
        out.push_str(": true");
    }
    out.push_str("\n};\n");
}

/// The rule set split by how the PAC evaluates it.
#[derive(Default)]
struct Tables {
    hosts: Vec<String>,
    domains: Vec<String>,
    host_globs: Vec<String>,
    url_globs: Vec<String>,
    v4: Vec<(u32, u32)>,
    v6: Vec<([u16; 8], u8)>,
}

fn split_rules(rules: &[BypassRule]) -> Tables {
    let mut t = Tables::default();
    for r in rules {
        match r {
            BypassRule::Host(h) => t.hosts.push(h.clone()),
            BypassRule::Domain(d) => t.domains.push(d.clone()),
            BypassRule::HostPattern(p) => t.host_globs.push(p.clone()),
            BypassRule::UrlPattern(p) => t.url_globs.push(p.clone()),
            BypassRule::Cidr(c) => match c.addr() {
                IpAddr::V4(_) => t.v4.extend(c.v4_bounds()),
                IpAddr::V6(a) => t.v6.push((a.segments(), c.prefix())),
            },
        }
    }
    // Lookup tables are order-free: sort so equal rule sets give equal bytes.
    t.hosts.sort_unstable();
    t.hosts.dedup();
    t.domains.sort_unstable();
    t.domains.dedup();
    t.v4 = merge_intervals(t.v4);
    t.v6.sort_unstable();
    t.v6.dedup();
    t
}

/// Proxy list in PAC syntax, with the fail-open fallback when asked.
pub(crate) fn proxy_list<'a>(entries: impl Iterator<Item = &'a str>, fail_open: bool) -> String {
    let mut s = String::new();
    for (i, e) in entries.enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str("PROXY ");
        s.push_str(e);
    }
    if fail_open {
        s.push_str("; DIRECT");
    }
    s
}

pub(crate) fn render(pac: &Pac) -> String {
    let t = split_rules(&pac.bypass);
    let mut out =
        String::with_capacity(4096 + 40 * (t.hosts.len() + t.domains.len() + t.host_globs.len() + t.url_globs.len()));
    out.push_str(
        "// Proxy auto-configuration generated by msc-pac. Do not edit: it is\n\
         // regenerated from the client's proxy rules.\n",
    );
    out.push_str(HELPERS);
    out.push('\n');

    push_v4_table(&mut out, "mscNR4", &non_routable_v4_intervals());
    let nr6: Vec<([u16; 8], u8)> = NON_ROUTABLE_V6.iter().map(|(a, p)| (a.segments(), *p)).collect();
    push_v6_table(&mut out, "mscNR6", nr6.iter().map(|(g, p)| (g, *p)));
    if !t.v4.is_empty() {
        push_v4_table(&mut out, "mscB4", &t.v4);
    }
    if !t.v6.is_empty() {
        push_v6_table(&mut out, "mscB6", t.v6.iter().map(|(g, p)| (g, *p)));
    }
    if !t.hosts.is_empty() {
        push_name_table(&mut out, "mscBHost", t.hosts.iter());
    }
    if !t.domains.is_empty() {
        push_name_table(&mut out, "mscBDomain", t.domains.iter());
    }
    if !t.host_globs.is_empty() {
        let _ = writeln!(
            out,
            "var mscBHostGlob = new RegExp({});",
            js_str(&combined_regex(t.host_globs.iter()))
        );
    }
    if !t.url_globs.is_empty() {
        let _ = writeln!(
            out,
            "var mscBUrlGlob = new RegExp({});",
            js_str(&combined_regex(t.url_globs.iter()))
        );
    }
    let http = proxy_list(pac.slots.iter().map(|s| s.http.as_str()), pac.fail_open);
    let https = proxy_list(pac.slots.iter().map(|s| s.https.as_str()), pac.fail_open);
    let _ = writeln!(out, "var mscSlots = {};", js_str(&http));
    if https != http {
        let _ = writeln!(out, "var mscSlotsTls = {};", js_str(&https));
    }
    if let Some(op) = &pac.on_premise {
        let _ = writeln!(out, "var mscIndicator = {};", js_str(&op.indicator));
        let _ = writeln!(out, "var mscOnPremise = {};", js_str(&op.reply));
    }

    out.push_str(
        r#"
function FindProxyForURL(url, host) {
  var h = host.toLowerCase(), n = -1, g = null, lit = false, i, e, c;
  // Some engines pass "[fe80::1]", pacparser passes "[fe80" (cut at the first
  // ':'), browsers usually "fe80::1": recover the literal from the URL.
  if (h.charAt(0) === "[") {
    e = h.indexOf("]");
    if (e > 0) h = h.substring(1, e);
    else {
      i = url.indexOf("[");
      e = url.indexOf("]", i);
      h = (i >= 0 && e > i) ? url.substring(i + 1, e).toLowerCase() : h.substring(1);
    }
  }
  if (h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
  // IP literals are recognised by their text, so they never reach DNS.
  if (h.indexOf(":") >= 0) {
    lit = true;
    g = mscV6(h);
    if (g !== null) {
      n = mscMapped(g);
      if (n >= 0) g = null;
    }
  } else {
    c = h.charCodeAt(0);
    if (c >= 48 && c <= 57) {
      n = mscV4(h);
      lit = n !== -1;
    }
  }

  // 1. Admin bypass list.
"#,
    );
    if !t.v4.is_empty() {
        out.push_str("  if (n >= 0 && mscIn4(n, mscB4)) return \"DIRECT\";\n");
    }
    if !t.v6.is_empty() {
        out.push_str("  if (g !== null && mscIn6(g, mscB6)) return \"DIRECT\";\n");
    }
    if !t.hosts.is_empty() || !t.domains.is_empty() {
        out.push_str("  if (!lit) {\n");
        if !t.hosts.is_empty() {
            out.push_str("    if (mscBHost[h] === true) return \"DIRECT\";\n");
        }
        if !t.domains.is_empty() {
            out.push_str(
                "    // The domain itself, then each parent: one lookup per label.\n\
                 \x20   for (var s = h; ; s = s.substring(i + 1)) {\n\
                 \x20     if (mscBDomain[s] === true) return \"DIRECT\";\n\
                 \x20     i = s.indexOf(\".\");\n\
                 \x20     if (i < 0) break;\n\
                 \x20   }\n",
            );
        }
        out.push_str("  }\n");
    }
    if !t.host_globs.is_empty() {
        out.push_str("  if (mscBHostGlob.test(h)) return \"DIRECT\";\n");
    }
    if !t.url_globs.is_empty() {
        out.push_str("  if (mscBUrlGlob.test(url.toLowerCase())) return \"DIRECT\";\n");
    }

    out.push_str(
        r#"
  // 2. Non-routable destinations: by text for literals, else plain names,
  // else the one DNS lookup of this call.
  if (n >= 0) {
    if (mscIn4(n, mscNR4)) return "DIRECT";
  } else if (g !== null) {
    if (mscIn6(g, mscNR6)) return "DIRECT";
  } else if (!lit) {
    if (h.indexOf(".") < 0) return "DIRECT";
    var r = dnsResolve(h);
    if (r && mscNonRoutable(r)) return "DIRECT";
  }
"#,
    );
    if let Some(op) = &pac.on_premise {
        out.push_str("\n  // 3. On premise: the indicator resolves to an expected address.\n");
        out.push_str("  var q = dnsResolve(mscIndicator);\n  if (");
        for (i, a) in op.expected.iter().enumerate() {
            if i > 0 {
                out.push_str(" || ");
            }
            let _ = write!(out, "q === {}", js_str(a));
        }
        out.push_str(") return mscOnPremise;\n");
    }
    out.push_str("\n  // 4. The client's local slots in rank order");
    out.push_str(if pac.fail_open {
        "; 5. fail open: DIRECT last.\n"
    } else {
        "; 5. fail closed: no DIRECT.\n"
    });
    if https != http {
        out.push_str(
            "  c = url.substring(0, 6).toLowerCase();\n\
             \x20 if (c === \"https:\" || c.substring(0, 4) === \"wss:\") return mscSlotsTls;\n",
        );
    }
    out.push_str("  return mscSlots;\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_str_passes_inert_ascii_only() {
        assert_eq!(js_str("a.b-c_d:8080/x?y=1&z=%20"), "\"a.b-c_d:8080/x?y=1&z=%20\"");
        assert_eq!(js_str("PROXY 127.0.0.1:1; DIRECT"), "\"PROXY 127.0.0.1:1; DIRECT\"");
    }

    #[test]
    fn js_str_escapes_everything_dangerous() {
        assert_eq!(js_str("\""), r#""\u0022""#);
        assert_eq!(js_str("'"), r#""\u0027""#);
        assert_eq!(js_str("\\"), r#""\\""#);
        assert_eq!(js_str("\n\r\t\0"), r#""\u000a\u000d\u0009\u0000""#);
        assert_eq!(js_str("</script>"), r#""\u003c/script\u003e""#);
        assert_eq!(js_str("`${x}`"), r#""\u0060$\u007bx\u007d\u0060""#);
        assert_eq!(js_str("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(js_str("é"), r#""\u00e9""#);
        assert_eq!(js_str("😀"), r#""\ud83d\ude00""#);
        // Nothing outside the inert set survives raw.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let q = js_str(&all);
        let body = &q[1..q.len() - 1];
        assert!(body.bytes().all(|b| b == b'\\' || is_inert(b)));
        assert!(!body.replace("\\\\", "").contains("\\\""));
        assert!(!body.contains(['"', '\'', '<', '>', '\n', '`', '{', '}']));
    }

    #[test]
    fn glob_regex_escapes_metacharacters() {
        let mut s = String::new();
        glob_to_regex("http://a.b/x+(y)$[z]?*", &mut s);
        assert_eq!(s, r"http://a\.b/x\+\(y\)\$\[z\][\s\S][\s\S]*");
    }

    #[test]
    fn proxy_list_joins_and_appends_direct() {
        assert_eq!(
            proxy_list(["a:1", "b:2"].into_iter(), true),
            "PROXY a:1; PROXY b:2; DIRECT"
        );
        assert_eq!(proxy_list(["a:1"].into_iter(), false), "PROXY a:1");
    }
}
