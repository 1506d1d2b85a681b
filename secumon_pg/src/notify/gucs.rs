//! Notification settings. Registered from `crate::gucs::register`; each constant sits beside
//! the setting it names. Channel secrets (URLs with tokens, bot tokens, routing keys) are
//! superuser-only and hidden from `SHOW ALL`: they belong in postgresql.conf, not in sessions.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};
use std::time::Duration;

pub static WEBHOOK_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static SLACK_WEBHOOK_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TEAMS_WEBHOOK_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TELEGRAM_BOT_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TELEGRAM_CHAT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TELEGRAM_API_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PAGERDUTY_ROUTING_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PAGERDUTY_EVENTS_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Safety-net poll of the outbox (ms); commits wake the dispatcher at once.
pub static POLL_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static CONNECT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5000);
pub static TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(12);
pub static MAX_AGE: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static BACKOFF_BASE: GucSetting<i32> = GucSetting::<i32>::new(2000);
pub static BACKOFF_MAX: GucSetting<i32> = GucSetting::<i32>::new(600_000);
pub static MAX_PARALLEL: GucSetting<i32> = GucSetting::<i32>::new(512);
pub static CHANNEL_PARALLEL: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static HISTORY_RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"30 days"));

fn secret(name: &'static CStr, short: &'static CStr, setting: &'static GucSetting<Option<CString>>) {
    GucRegistry::define_string_guc(
        name,
        short,
        c"Creates or refreshes a default notification channel; empty removes it. Set in postgresql.conf (it holds a secret).",
        setting,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
}

fn int(name: &'static CStr, short: &'static CStr, long: &'static CStr, setting: &'static GucSetting<i32>, min: i32, max: i32, unit: GucFlags) {
    GucRegistry::define_int_guc(name, short, long, setting, min, max, GucContext::Sighup, unit);
}

pub fn register() {
    secret(c"secumon.webhook_url", c"URL of the default webhook channel (default-webhook).", &WEBHOOK_URL);
    secret(c"secumon.slack_webhook_url", c"Slack incoming-webhook URL of the default Slack channel (default-slack).", &SLACK_WEBHOOK_URL);
    secret(c"secumon.teams_webhook_url", c"Teams workflow URL of the default Teams channel (default-teams).", &TEAMS_WEBHOOK_URL);
    secret(c"secumon.telegram_bot_token", c"Bot token of the default Telegram channel (default-telegram); needs secumon.telegram_chat_id.", &TELEGRAM_BOT_TOKEN);
    secret(c"secumon.telegram_chat_id", c"Chat id of the default Telegram channel (default-telegram).", &TELEGRAM_CHAT_ID);
    secret(c"secumon.telegram_api_url", c"Telegram Bot API base URL for the default Telegram channel (default https://api.telegram.org).", &TELEGRAM_API_URL);
    secret(c"secumon.pagerduty_routing_key", c"Events API v2 routing key of the default PagerDuty channel (default-pagerduty).", &PAGERDUTY_ROUTING_KEY);
    secret(c"secumon.pagerduty_events_url", c"Events API v2 URL for the default PagerDuty channel (default https://events.pagerduty.com/v2/enqueue).", &PAGERDUTY_EVENTS_URL);

    let ms = GucFlags::UNIT_MS;
    int(c"secumon.notify_poll_interval", c"How often the notifier looks at the outbox when nothing woke it.",
        c"Commits that queue notifications wake the notifier at once; this is a safety net.", &POLL_INTERVAL, 10, 3_600_000, ms);
    int(c"secumon.notify_connect_timeout", c"Connect timeout of one notification attempt.", c"", &CONNECT_TIMEOUT, 100, 600_000, ms);
    int(c"secumon.notify_timeout", c"Total timeout of one notification attempt (connect, send, answer).",
        c"A channel's settings may set timeout_ms to override it.", &TIMEOUT, 100, 600_000, ms);
    int(c"secumon.notify_max_attempts", c"Attempts per notification before it is marked failed.", c"", &MAX_ATTEMPTS, 1, 1000, GucFlags::default());
    int(c"secumon.notify_max_age", c"Age after which a notification is no longer retried and is marked failed.", c"", &MAX_AGE, 1, 30 * 86_400, GucFlags::UNIT_S);
    int(c"secumon.notify_backoff_base", c"Wait before the second attempt; doubles per attempt, with jitter.",
        c"A receiver's Retry-After (or Telegram retry_after) replaces it.", &BACKOFF_BASE, 10, 3_600_000, ms);
    int(c"secumon.notify_backoff_max", c"Longest wait between attempts chosen by SecuMon.",
        c"A receiver's Retry-After may ask for longer and is honoured.", &BACKOFF_MAX, 10, 86_400_000, ms);
    int(c"secumon.notify_max_parallel", c"Notifications in flight at once (claimed, not yet recorded), all channels together.", c"", &MAX_PARALLEL, 1, 100_000, GucFlags::default());
    int(c"secumon.notify_channel_parallel", c"Sender threads per channel; each sends up to 8 claimed notifications in turn.",
        c"Bounds what a slow receiver can hold up; other channels have their own threads.", &CHANNEL_PARALLEL, 1, 256, GucFlags::default());
    GucRegistry::define_string_guc(
        c"secumon.notify_history_retention",
        c"How long sent and failed notifications stay in secumon.notification_history.",
        c"An interval such as '30 days'; applied by the notification_retention job.",
        &HISTORY_RETENTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

pub fn text(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().and_then(|s| s.into_string().ok()).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub fn millis(setting: &GucSetting<i32>) -> Duration {
    Duration::from_millis(setting.get().max(0) as u64)
}
