//! The inputs registry as a run's pod reaches it (inputs by content, [`crate::snapshot`]): its
//! addresses and port, which the run's NetworkPolicy lets the pod reach whatever the task's
//! egress, and its name, which a pod of the run's own finds in its `/etc/hosts` (a task
//! without egress has no DNS).

use std::net::IpAddr;

/// Where the pod finds the registry of `REGISTRY/REPOSITORY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRoute {
    /// The registry, as its references name it (`host[:port]`).
    pub registry: String,
    /// The host's name, when it is not an address.
    pub name: Option<String>,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    /// Spoken to over plain HTTP (a loopback registry, or one in `BUILDR_INSECURE_REGISTRIES`):
    /// the pod is told so.
    pub plain_http: bool,
}

/// The route to the registry of `location`, its name resolved here; why not, when it cannot be.
pub async fn route(location: &str) -> Result<RegistryRoute, String> {
    let registry = location
        .split_once('/')
        .map_or(location, |(registry, _)| registry);
    let plain_http = crate::cache::oci::plain_http(registry);
    let default_port = if plain_http { 80 } else { 443 };
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            let port = port
                .parse()
                .map_err(|_| format!("`{registry}` has no valid port"))?;
            (host, port)
        }
        _ => (registry, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (name, addresses) = match host.parse::<IpAddr>() {
        Ok(address) => (None, vec![address]),
        Err(_) => {
            let found = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let mut addresses: Vec<IpAddr> = found.map(|address| address.ip()).collect();
            addresses.sort();
            addresses.dedup();
            (Some(host.to_string()), addresses)
        }
    };
    Ok(RegistryRoute {
        registry: registry.to_string(),
        name,
        addresses,
        port,
        plain_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_route_has_the_registry_s_addresses_and_port() {
        let route = route("10.1.2.3:5000/team/inputs").await.unwrap();
        assert_eq!(route.addresses, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            (route.port, route.name, route.plain_http),
            (5000, None, false)
        );

        let route = route_of("localhost:5001/inputs").await;
        assert_eq!(route.name.as_deref(), Some("localhost"));
        assert!(route.addresses.iter().all(IpAddr::is_loopback));
        assert!(route.plain_http);

        assert_eq!(route_of("[::1]:5002/inputs").await.port, 5002);
        assert_eq!(route_of("127.0.0.1/inputs").await.port, 80);
        assert_eq!(route_of("10.0.0.1/inputs").await.port, 443);
    }

    async fn route_of(location: &str) -> RegistryRoute {
        route(location).await.unwrap()
    }
}
