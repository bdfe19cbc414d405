//! The delivery log: what happened to each message, newest first, for the admin page.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

/// Identifies one queued message in the delivery log (unique within one [`Mailer`](crate::Mailer)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub(crate) u64);

impl MessageId {
    /// The number, for URLs and logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which kind of message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// [`Mailer::send_invitation`](crate::Mailer::send_invitation).
    Invitation,
    /// [`Mailer::send_password_reset`](crate::Mailer::send_password_reset).
    PasswordReset,
    /// [`Mailer::send_test`](crate::Mailer::send_test).
    Test,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::Invitation => "invitation",
            MessageKind::PasswordReset => "password reset",
            MessageKind::Test => "test message",
        })
    }
}

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Waiting in the queue or being sent for the first time.
    Queued,
    /// Accepted by the SMTP server, or written to the outbox.
    Sent,
    /// Given up: a permanent (5xx) reply, or the last attempt failed. `reason` carries the
    /// server's reply (e.g. `permanent error (550): 5.1.1 <x@y>: Recipient address rejected`)
    /// or the connection error.
    Failed {
        /// The server's reply or the client's error.
        reason: String,
    },
    /// Attempt number `attempt` failed transiently; another attempt follows after a wait.
    Retrying {
        /// How many attempts have failed so far.
        attempt: u32,
        /// Why the last attempt failed.
        reason: String,
    },
}

impl DeliveryStatus {
    /// True for [`Sent`](Self::Sent) and [`Failed`](Self::Failed): nothing more will happen.
    pub fn is_final(&self) -> bool {
        matches!(self, DeliveryStatus::Sent | DeliveryStatus::Failed { .. })
    }
}

/// One message in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The id returned when it was queued.
    pub id: MessageId,
    /// The recipient's address.
    pub to: String,
    /// What kind of message it is.
    pub kind: MessageKind,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far (0 while queued).
    pub attempts: u32,
    /// When it was queued.
    pub queued: SystemTime,
    /// When `status` last changed.
    pub updated: SystemTime,
}

/// Bounded, newest first; every change bumps a counter that waiters watch.
pub(crate) struct DeliveryLog {
    entries: Mutex<VecDeque<Delivery>>,
    capacity: usize,
    changes: watch::Sender<u64>,
}

impl DeliveryLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            changes: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivery>> {
        // A panic while holding the lock cannot leave the deque half-updated in a harmful way.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn push(&self, delivery: Delivery) {
        {
            let mut entries = self.lock();
            entries.push_front(delivery);
            entries.truncate(self.capacity);
        }
        self.changed();
    }

    /// Removes an entry that never made it into the queue.
    pub(crate) fn remove(&self, id: MessageId) {
        self.lock().retain(|d| d.id != id);
        self.changed();
    }

    pub(crate) fn update(&self, id: MessageId, status: DeliveryStatus, attempts: u32) {
        {
            let mut entries = self.lock();
            if let Some(entry) = entries.iter_mut().find(|d| d.id == id) {
                entry.status = status;
                entry.attempts = attempts;
                entry.updated = SystemTime::now();
            }
        }
        self.changed();
    }

    pub(crate) fn snapshot(&self) -> Vec<Delivery> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<Delivery> {
        self.lock().iter().find(|d| d.id == id).cloned()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> Delivery {
        Delivery {
            id: MessageId(id),
            to: format!("u{id}@example.org"),
            kind: MessageKind::Test,
            status: DeliveryStatus::Queued,
            attempts: 0,
            queued: SystemTime::now(),
            updated: SystemTime::now(),
        }
    }

    #[test]
    fn bounded_newest_first() {
        let log = DeliveryLog::new(3);
        for id in 1..=5 {
            log.push(entry(id));
        }
        let ids: Vec<u64> = log.snapshot().iter().map(|d| d.id.get()).collect();
        assert_eq!(ids, vec![5, 4, 3]);
        // Updates to an evicted entry are ignored rather than resurrecting it.
        log.update(MessageId(1), DeliveryStatus::Sent, 1);
        assert!(log.get(MessageId(1)).is_none());
        log.update(MessageId(4), DeliveryStatus::Sent, 1);
        assert_eq!(log.get(MessageId(4)).unwrap().status, DeliveryStatus::Sent);
        log.remove(MessageId(5));
        assert_eq!(log.snapshot().len(), 2);
    }

    #[test]
    fn status_serializes_with_state_tag() {
        let json = serde_json::to_string(&DeliveryStatus::Retrying {
            attempt: 2,
            reason: "451".to_owned(),
        })
        .unwrap();
        assert_eq!(json, r#"{"state":"retrying","attempt":2,"reason":"451"}"#);
    }
}
