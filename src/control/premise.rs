//! The on/off-premise indicator, evaluated the way the PAC does: the
//! indicator host name resolves to one of the expected addresses only on the
//! company network.

use std::net::IpAddr;

use crate::config::client::OnPremise;

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PremiseCheck {
    pub on_premise: bool,
    /// What the indicator resolved to (or why it did not), for `msc status`.
    pub answer: String,
}

/// Resolves the indicator on the blocking pool (never on a runtime thread)
/// and compares. A name that does not resolve means off premise.
pub async fn check(op: &OnPremise) -> PremiseCheck {
    let name = op.indicator.clone();
    let res = monoio::spawn_blocking(move || lookup(&name)).await;
    match res {
        Ok(Ok(addrs)) => {
            let on = addrs.iter().any(|a| op.expected.contains(a));
            let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            PremiseCheck {
                on_premise: on,
                answer: list.join(", "),
            }
        }
        Ok(Err(e)) => PremiseCheck {
            on_premise: false,
            answer: format!("does not resolve: {e}"),
        },
        Err(_) => PremiseCheck {
            on_premise: false,
            answer: "resolver thread failed".into(),
        },
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "runs on the blocking pool, never on a runtime thread"
)]
fn lookup(name: &str) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    // An IP literal indicator is allowed (tests, odd setups): no lookup then.
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    Ok((name, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
}
