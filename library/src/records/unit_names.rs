//! The names ops gives what it installs in systemd: a version's units
//! (`<pod>-<version>-<unit>`, each instance of a template), the pod's target
//! and slice. Pure naming, so every layer can say which units a version
//! runs without reading the unit directory.

use super::names::{PodName, UnitName, Version};
use super::pod::{Pod, Unit};

/// `(stem, suffix)` of a unit name: `("web@", "service")`.
pub fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or((name, ""))
}

/// The name a bundle unit is installed under.
pub fn installed_name(pod: &PodName, version: &Version, unit: &UnitName) -> String {
    format!("{}{}", version_prefix(pod, version), unit.as_str())
}

/// What every installed name of a version's units starts with.
pub fn version_prefix(pod: &PodName, version: &Version) -> String {
    format!("{pod}-{version}-")
}

/// The names systemd runs for a unit: each instance of a template, or the
/// unit itself.
pub fn runnable(pod: &PodName, version: &Version, unit: &Unit) -> Vec<String> {
    let installed = installed_name(pod, version, &unit.name);
    if unit.name.is_template() {
        let (stem, suffix) = split(&installed);
        unit.instances
            .iter()
            .map(|i| format!("{stem}{i}.{suffix}"))
            .collect()
    } else {
        vec![installed]
    }
}

pub fn target_name(pod: &PodName) -> String {
    format!("ops-{pod}.target")
}

/// What an idle pod's units start with (see crate::units): its idle
/// target, its sockets and its waker. Pod names cannot contain `:`
/// (systemd allows it in unit names), so no other pod's unit starts so:
/// with `-`, pod `shop`'s idle target would be pod `shop-idle`'s target.
pub fn idle_prefix(pod: &PodName) -> String {
    format!("ops-{pod}:")
}

/// The target that arms an idle pod's ports, enabled instead of the pod's
/// own while it is idle.
pub fn idle_target_name(pod: &PodName) -> String {
    format!("{}idle.target", idle_prefix(pod))
}

/// The service an idle pod's sockets start: it wakes the pod.
pub fn waker_name(pod: &PodName) -> String {
    format!("{}wake.service", idle_prefix(pod))
}

/// The socket that listens on one port of an idle pod.
pub fn wake_socket_name(pod: &PodName, port: u16) -> String {
    format!("{}wake-{port}.socket", idle_prefix(pod))
}

/// A glob (as `systemctl list-units` takes) of every wake socket of `pod`.
pub fn wake_sockets_glob(pod: &PodName) -> String {
    format!("{}wake-*", idle_prefix(pod))
}

/// Whether `name` is exactly one of pod `pod`'s idle units (its idle
/// target, its waker, or its socket for some port), never another pod's.
pub fn is_idle_unit(pod: &PodName, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&idle_prefix(pod)) else {
        return false;
    };
    let socket_port = rest
        .strip_prefix("wake-")
        .and_then(|r| r.strip_suffix(".socket"))
        .and_then(|p| p.parse::<u16>().ok().filter(|n| n.to_string() == p));
    rest == "idle.target" || rest == "wake.service" || socket_port.is_some()
}

/// An idle pod's units: its idle target, a socket per port, its waker.
pub fn idle_units(pod: &PodName, ports: &[u16]) -> Vec<String> {
    let mut units = vec![idle_target_name(pod)];
    units.extend(ports.iter().map(|p| wake_socket_name(pod, *p)));
    units.push(waker_name(pod));
    units
}

/// `-` separates levels in slice names, so the pod's own are escaped.
pub fn slice_name(pod: &PodName) -> String {
    format!("ops-{}.slice", pod.as_str().replace('-', "\\x2d"))
}

/// Every runnable unit of a version, and those ops starts.
pub fn version_units(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut all = Vec::new();
    let mut start = Vec::new();
    for unit in &pod.units {
        let names = runnable(&pod.name, &pod.version, unit);
        if unit.start {
            start.extend(names.iter().cloned());
        }
        all.extend(names);
    }
    (all, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pod `shop`'s idle units are told from every other pod's exactly
    /// (review18 F1: `ops-shop-idle.target` is pod `shop-idle`'s target).
    #[test]
    fn idle_units_are_the_pods_own_exactly() {
        let shop = PodName::parse("shop").unwrap();
        let shop_idle = PodName::parse("shop-idle").unwrap();
        assert_eq!(
            idle_units(&shop, &[8080]),
            [
                "ops-shop:idle.target",
                "ops-shop:wake-8080.socket",
                "ops-shop:wake.service"
            ]
        );
        assert_ne!(idle_target_name(&shop), target_name(&shop_idle));
        for name in idle_units(&shop, &[1, 65535]) {
            assert!(is_idle_unit(&shop, &name), "{name}");
            assert!(!is_idle_unit(&shop_idle, &name), "{name}");
        }
        for other in [
            "ops-shop-idle.target",
            "ops-shop-wake.service",
            "ops-shop:idle.target.d",
            "ops-shop:wake-08080.socket",
            "ops-shop:wake-65536.socket",
            "ops-shop:wake-.socket",
            "ops-shop-idle:idle.target",
        ] {
            assert!(!is_idle_unit(&shop, other), "{other}");
        }
    }
}
