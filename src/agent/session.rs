//! Session events from logind on the system bus: a trusted user's disable
//! ends when a session is locked (`org.freedesktop.login1.Session.Lock`),
//! a session ends (`Manager.SessionRemoved`, logout), or the machine is
//! about to suspend or shut down (`Manager.PrepareForSleep(true)`,
//! `Manager.PrepareForShutdown(true)`). Any session counts: protection
//! coming back on early is the safe direction.
//!
//! Only signals sent by the current owner of `org.freedesktop.login1` are
//! believed (the bus's policy lets only logind own that name). The bus is
//! the system bus, or the one `DBUS_SYSTEM_BUS_ADDRESS` names (tests run a
//! private `dbus-daemon`). Runs on its own thread with zbus's blocking API.

use zbus::blocking::{Connection, MessageIterator, fdo::DBusProxy};
use zbus::message::{Message, Type};
use zbus::names::BusName;
use zbus::{MatchRule, OwnedMatchRule};

use crate::control::StateFeed;
use crate::control::state::EnableCause;

pub const LOGIN1: &str = "org.freedesktop.login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";

/// Watches logind on a new thread, feeding re-enables to the control plane.
/// Without a system bus, says so once: the disable then ends only by time or
/// `msc enable`.
pub fn watch(feed: StateFeed) {
    let spawned = std::thread::Builder::new().name("msc-session".into()).spawn(move || {
        if let Err(e) = run(&feed) {
            tracing::warn!(
                "session events unavailable ({e}): a disable ends only when its time is up or by msc enable, not on screen lock, logout, suspend or shutdown"
            );
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the session watcher: {e}");
    }
}

fn rules() -> zbus::Result<Vec<OwnedMatchRule>> {
    let signal = |iface: &'static str, member: &'static str| -> zbus::Result<OwnedMatchRule> {
        Ok(MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(LOGIN1)?
            .interface(iface)?
            .member(member)?
            .build()
            .into())
    };
    Ok(vec![
        signal(MANAGER, "PrepareForSleep")?,
        signal(MANAGER, "PrepareForShutdown")?,
        signal(MANAGER, "SessionRemoved")?,
        signal(SESSION, "Lock")?,
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg(0, LOGIN1)?
            .build()
            .into(),
    ])
}

fn run(feed: &StateFeed) -> zbus::Result<()> {
    let conn = Connection::system()?;
    // The iterator first, so nothing sent after the rules are added is missed.
    let messages = MessageIterator::from(&conn);
    let dbus = DBusProxy::new(&conn)?;
    for r in rules()? {
        dbus.add_match_rule(r.into())?;
    }
    let mut owner: Option<String> = dbus
        .get_name_owner(BusName::try_from(LOGIN1)?)
        .ok()
        .map(|o| o.to_string());
    tracing::info!(
        "session events: watching logind (lock, logout, suspend, shutdown) on the system bus{}",
        if owner.is_some() {
            ""
        } else {
            " (logind not running yet)"
        }
    );
    for msg in messages {
        let msg = msg?;
        if let Some(cause) = classify(&msg, &mut owner) {
            tracing::info!("logind: {cause}");
            feed.enable(cause);
        }
    }
    Ok(())
}

/// What a message means for a disable, tracking who owns logind's name.
fn classify(msg: &Message, owner: &mut Option<String>) -> Option<EnableCause> {
    let h = msg.header();
    if h.message_type() != Type::Signal {
        return None;
    }
    let iface = h.interface()?.as_str();
    let member = h.member()?.as_str();
    let sender = h.sender().map(|s| s.as_str());
    if iface == "org.freedesktop.DBus" && member == "NameOwnerChanged" && sender == Some("org.freedesktop.DBus") {
        if let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>()
            && name == LOGIN1
        {
            *owner = (!new.is_empty()).then_some(new);
        }
        return None;
    }
    if sender.is_none() || sender != owner.as_deref() {
        return None;
    }
    match (iface, member) {
        (SESSION, "Lock") => Some(EnableCause::ScreenLock),
        (MANAGER, "SessionRemoved") => Some(EnableCause::Logout),
        (MANAGER, "PrepareForSleep") => msg
            .body()
            .deserialize::<bool>()
            .ok()
            .filter(|s| *s)
            .map(|_| EnableCause::Suspend),
        (MANAGER, "PrepareForShutdown") => msg
            .body()
            .deserialize::<bool>()
            .ok()
            .filter(|s| *s)
            .map(|_| EnableCause::Shutdown),
        _ => None,
    }
}
