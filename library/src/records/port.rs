//! What a port record holds: one host port a version uses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a port was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Declared with a number in pod.json (or the `ports` option).
    Fixed,
    /// Picked by ops from the range.
    Assigned,
    /// The instance's own name, from `"replication": [8080, 8081]`.
    Instance,
    /// The default port (`PORT`) of a pod that declares none, picked by
    /// ops from the range (seed 004).
    Default,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Fixed => "fixed",
            Kind::Assigned => "assigned",
            Kind::Instance => "instance",
            Kind::Default => "default",
        })
    }
}

/// One port a version uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The port's name in pod.json; `None` for an instance's own port.
    pub name: Option<String>,
    /// The instance of the pod's template units it serves; `None` for
    /// plain units.
    pub instance: Option<String>,
    pub port: u16,
    pub kind: Kind,
}

impl Allocation {
    /// `http (instance 2)`, `http`, `instance 8080`, `the default port`.
    pub fn describe(&self) -> String {
        describe_kind(self.kind, self.name.as_deref(), self.instance.as_deref())
    }
}

/// A port as messages name it, the default port by that name.
pub fn describe_kind(kind: Kind, name: Option<&str>, instance: Option<&str>) -> String {
    match (kind, instance) {
        (Kind::Default, Some(i)) => format!("the default port (instance {i})"),
        (Kind::Default, None) => "the default port".to_owned(),
        _ => describe(name, instance),
    }
}

pub fn describe(name: Option<&str>, instance: Option<&str>) -> String {
    match (name, instance) {
        (Some(n), Some(i)) => format!("{n} (instance {i})"),
        (Some(n), None) => n.to_owned(),
        (None, Some(i)) => format!("instance {i}"),
        (None, None) => "the pod".to_owned(),
    }
}
