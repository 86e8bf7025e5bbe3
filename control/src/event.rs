//! The events the handler accepts, and nothing else.
//!
//! | event | does |
//! | --- | --- |
//! | EventBridge `"detail-type": "Scheduled Event"` | a scan of every instance |
//! | `{"action": "scan", "instance_ids"?: ["i-…"]}` | a scan (of those instances only) |
//! | `{"action": "sweep", "ttl_hours"?: N}` | a sweep (TTL from the event or the config) |
//! | `{"action": "scale"}` | size the worker group from the queue |
//! | `{"action": "inventory"}` | count instances, volumes, snapshots per region |
//! | `{"action": "self-update"}` | update the function (and stack) from the release ([`crate::self_update`]) |
//! | a CloudFormation custom resource request (`RequestType`, `ResponseURL`) | register / clean up ([`crate::custom_resource`]) |
//!
//! Anything else is an error that says what was expected: an unknown action,
//! an unknown field (a misspelt `instance_ids` must not turn an on-demand scan
//! of two instances into a scan of all of them), or another EventBridge event.

use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

/// The `detail-type` of an EventBridge schedule's event.
const SCHEDULED_EVENT: &str = "Scheduled Event";
/// Most instance ids one on-demand event may name.
const MAX_INSTANCE_IDS: usize = 1000;
/// Characters of an unrecognised event quoted in the error.
const EXCERPT_CHARS: usize = 200;

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Snapshot instances and enqueue their jobs.
    Scan {
        /// Only these instances (in whichever configured region they are);
        /// `None`: every instance.
        instance_ids: Option<Vec<String>>,
    },
    /// Delete owned snapshots and volumes older than the TTL.
    Sweep {
        /// The TTL; `None`: the configured one.
        ttl: Option<Duration>,
    },
    /// Size the worker group from the queue depth.
    Scale,
    /// Count resources per region.
    Inventory,
    /// Update the function's code (and the stack) from the release bucket.
    SelfUpdate,
    /// A CloudFormation custom resource request, parsed (and answered, even
    /// when malformed) by [`crate::custom_resource`].
    CustomResource(Box<crate::custom_resource::Request>),
}

/// An event the handler does not accept.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// An EventBridge event other than a schedule's.
    #[error(
        "EventBridge event {detail_type:?} from {source_name:?} is not handled (only {SCHEDULED_EVENT:?})"
    )]
    EventBridge {
        /// Its `detail-type`.
        detail_type: String,
        /// Its `source`.
        source_name: String,
    },
    /// An `action` event that does not parse.
    #[error("invalid {action} event: {detail}")]
    Invalid {
        /// The action, or `action` when it is the action that is wrong.
        action: String,
        /// What is wrong (serde's words: unknown variant or field, bad type).
        detail: String,
    },
    /// Neither an EventBridge event nor an `action` event.
    #[error(
        "unrecognised event (expected an EventBridge Scheduled Event or {{\"action\": \"scan\"|\"sweep\"|\"scale\"|\"inventory\"}}): {excerpt}"
    )]
    Unrecognised {
        /// The start of the event.
        excerpt: String,
    },
}

/// The `action` events, as they are written.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum Action {
    Scan {
        #[serde(default)]
        instance_ids: Option<Vec<String>>,
    },
    Sweep {
        #[serde(default)]
        ttl_hours: Option<f64>,
    },
    Scale {},
    Inventory {},
    #[serde(rename = "self-update")]
    SelfUpdate {},
}

impl Event {
    /// Recognise `event`.
    ///
    /// # Errors
    /// [`EventError`] saying what was expected.
    pub fn parse(event: &Value) -> Result<Self, EventError> {
        if event.get("RequestType").is_some() || event.get("ResponseURL").is_some() {
            return Ok(Self::CustomResource(Box::new(
                crate::custom_resource::Request(event.clone()),
            )));
        }
        if event.get("detail-type").is_some() {
            let scheduled: EventBridgeEvent =
                serde_json::from_value(event.clone()).map_err(|err| EventError::Invalid {
                    action: "EventBridge".to_string(),
                    detail: err.to_string(),
                })?;
            if scheduled.detail_type != SCHEDULED_EVENT {
                return Err(EventError::EventBridge {
                    detail_type: scheduled.detail_type,
                    source_name: scheduled.source,
                });
            }
            return Ok(Self::Scan { instance_ids: None });
        }
        let Some(action) = event.get("action") else {
            let mut excerpt: String = event.to_string().chars().take(EXCERPT_CHARS).collect();
            if excerpt.len() < event.to_string().len() {
                excerpt.push('…');
            }
            return Err(EventError::Unrecognised { excerpt });
        };
        let invalid = |detail: String| EventError::Invalid {
            action: action.as_str().unwrap_or("action").to_string(),
            detail,
        };
        let parsed: Action =
            serde_json::from_value(event.clone()).map_err(|err| invalid(err.to_string()))?;
        Ok(match parsed {
            Action::Scan { instance_ids } => {
                if let Some(ids) = &instance_ids {
                    if ids.is_empty() {
                        return Err(invalid(
                            "instance_ids is empty (leave it out to scan every instance)"
                                .to_string(),
                        ));
                    }
                    if ids.len() > MAX_INSTANCE_IDS {
                        return Err(invalid(format!(
                            "{} instance ids (at most {MAX_INSTANCE_IDS} per event)",
                            ids.len()
                        )));
                    }
                    if let Some(bad) = ids.iter().find(|id| !is_instance_id(id)) {
                        return Err(invalid(format!("{bad:?} is not an instance id (i-…)")));
                    }
                }
                Self::Scan { instance_ids }
            }
            Action::Sweep { ttl_hours } => Self::Sweep {
                ttl: ttl_hours
                    .map(|hours| {
                        crate::config::hours(hours).ok_or_else(|| {
                            invalid(format!("ttl_hours {hours}: expected 0 or more hours"))
                        })
                    })
                    .transpose()?,
            },
            Action::Scale {} => Self::Scale,
            Action::Inventory {} => Self::Inventory,
            Action::SelfUpdate {} => Self::SelfUpdate,
        })
    }
}

/// `i-` and hex digits.
fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(event: Value) -> Result<Event, EventError> {
        Event::parse(&event)
    }

    #[test]
    fn a_schedule_is_a_scan_of_everything() {
        let event = json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2015-10-08T16:53:06Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"],
            "detail": {}
        });
        assert_eq!(parse(event).ok(), Some(Event::Scan { instance_ids: None }));
    }

    #[test]
    fn action_events() {
        assert_eq!(
            parse(json!({"action": "scan", "instance_ids": ["i-0abc", "i-12"]})).ok(),
            Some(Event::Scan {
                instance_ids: Some(vec!["i-0abc".to_string(), "i-12".to_string()])
            })
        );
        assert_eq!(
            parse(json!({"action": "scan"})).ok(),
            Some(Event::Scan { instance_ids: None })
        );
        assert_eq!(
            parse(json!({"action": "sweep", "ttl_hours": 1.5})).ok(),
            Some(Event::Sweep {
                ttl: Some(Duration::from_secs(5400))
            })
        );
        assert_eq!(
            parse(json!({"action": "sweep"})).ok(),
            Some(Event::Sweep { ttl: None })
        );
        assert_eq!(parse(json!({"action": "scale"})).ok(), Some(Event::Scale));
        assert_eq!(
            parse(json!({"action": "inventory"})).ok(),
            Some(Event::Inventory)
        );
        assert_eq!(
            parse(json!({"action": "self-update"})).ok(),
            Some(Event::SelfUpdate)
        );
    }

    #[test]
    fn cloudformation_requests_go_to_the_custom_resource_even_malformed() {
        for event in [
            json!({"RequestType": "Create", "ResponseURL": "https://s3/x", "StackId": "s"}),
            json!({"ResponseURL": "https://s3/x"}),
            json!({"RequestType": "Delete"}),
        ] {
            assert!(
                matches!(parse(event.clone()), Ok(Event::CustomResource(_))),
                "{event}"
            );
        }
    }

    #[test]
    fn what_is_not_understood_is_an_error_saying_so() {
        let cases = [
            (json!({"action": "delete"}), "unknown variant `delete`"),
            (
                json!({"action": "scan", "instanceIds": ["i-1"]}),
                "unknown field `instanceIds`",
            ),
            (
                json!({"action": "scale", "now": true}),
                "unknown field `now`",
            ),
            (
                json!({"action": "scan", "instance_ids": []}),
                "instance_ids is empty",
            ),
            (
                json!({"action": "scan", "instance_ids": ["vol-1"]}),
                "not an instance id",
            ),
            (json!({"action": "sweep", "ttl_hours": -1}), "ttl_hours -1"),
            (json!({"action": "sweep", "ttl_hours": "1"}), "invalid type"),
            (json!({"hello": "world"}), "unrecognised event"),
            (json!([1, 2]), "unrecognised event"),
            (
                json!({"detail-type": "EC2 Instance State-change Notification",
                       "source": "aws.ec2", "detail": {}}),
                "is not handled",
            ),
        ];
        for (event, expected) in cases {
            let err = parse(event.clone()).expect_err(&event.to_string());
            assert!(err.to_string().contains(expected), "{event}: {err}");
        }
    }
}
