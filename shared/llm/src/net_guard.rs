//! The SSRF guard of provider base URLs. A provider's `base_url` is where
//! Lambent sends the provider key and the user's messages, so it must never
//! point inside the deployment: link-local and cloud metadata addresses are
//! always refused; loopback, private and other non-public addresses (and plain
//! http) only with `LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS=1`, for local
//! development and tests.
//!
//! The check runs when a provider is saved (on the URL and on what its host
//! resolves to now) and must run again when a connection is made, because DNS
//! answers change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why a URL or address is refused (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("base_url: {0}")]
pub struct Refused(pub String);

/// What an address is, for the rules above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Loopback, private, shared (CGNAT), unspecified, documentation, ...
    NonPublic,
    /// Link-local (including 169.254.169.254 and fd00:ec2::254): never allowed.
    LinkLocalOrMetadata,
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let seg = v6.segments();
            // fd00:ec2::254 is the EC2 metadata service over IPv6.
            if (seg[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            {
                AddressClass::LinkLocalOrMetadata
            } else if v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || v6.is_multicast()
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x0064 && seg[1] == 0xff9b)
            {
                AddressClass::NonPublic
            } else {
                AddressClass::Public
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() {
        AddressClass::LinkLocalOrMetadata
    } else if ip.is_loopback()
        || ip.is_private()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
    {
        AddressClass::NonPublic
    } else {
        AddressClass::Public
    }
}

/// Whether an address may be connected to.
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    match classify(ip) {
        AddressClass::Public => Ok(()),
        AddressClass::NonPublic if allow_private => Ok(()),
        AddressClass::NonPublic => Err(Refused(format!(
            "{ip} is a loopback, private or reserved address"
        ))),
        AddressClass::LinkLocalOrMetadata => {
            Err(Refused(format!("{ip} is a link-local or metadata address")))
        }
    }
}

/// Checks the URL itself: scheme, no credentials, and a host that is not a
/// refused address or a name for one.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, Refused> {
    if raw.len() > 2048 {
        return Err(Refused("longer than 2048 characters".into()));
    }
    let url = Url::parse(raw).map_err(|e| Refused(format!("not a URL ({e})")))?;
    match (url.scheme(), allow_private) {
        ("https", _) | ("http", true) => {}
        ("http", false) => return Err(Refused("must use https".into())),
        (other, _) => return Err(Refused(format!("scheme {other:?} is not https"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused("must not carry credentials".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Refused("must not have a query or a fragment".into()));
    }
    match url.host() {
        None => return Err(Refused("has no host".into())),
        Some(Host::Ipv4(ip)) => address_allowed(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => address_allowed(IpAddr::V6(ip), allow_private)?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local_name = name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".internal")
                || name.ends_with(".local");
            if name == "metadata.google.internal" || name == "instance-data" {
                return Err(Refused(format!("{name} is a metadata host")));
            }
            if local_name && !allow_private {
                return Err(Refused(format!("{name} is a local host name")));
            }
        }
    }
    Ok(url)
}

/// Checks the URL and every address its host resolves to now. A name that
/// does not resolve is accepted here (the provider may be reachable only from
/// the deployment); the connection-time check still applies.
pub async fn check_base_url(raw: &str, allow_private: bool) -> Result<Url, Refused> {
    let url = check_url(raw, allow_private)?;
    if let Some(Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host((name.to_owned(), port)),
        )
        .await;
        if let Ok(Ok(addrs)) = lookup {
            for addr in addrs {
                address_allowed(addr.ip(), allow_private)
                    .map_err(|Refused(why)| Refused(format!("{name} resolves to {why}")))?;
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_refused_even_when_private_is_allowed() {
        for raw in [
            "https://169.254.169.254/latest",
            "http://169.254.169.254/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:169.254.169.254]/",
            "https://metadata.google.internal/",
        ] {
            assert!(check_url(raw, true).is_err(), "{raw}");
            assert!(check_url(raw, false).is_err(), "{raw}");
        }
    }

    #[test]
    fn private_addresses_need_the_deployment_setting() {
        for raw in [
            "https://127.0.0.1:8443/v1",
            "https://10.0.0.8/",
            "https://172.16.3.4/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fd12::1]/",
            "https://0.0.0.0/",
            "https://localhost:9000/",
            "http://127.0.0.1:9000/v1",
        ] {
            assert!(check_url(raw, false).is_err(), "{raw}");
            assert!(check_url(raw, true).is_ok(), "{raw}");
        }
    }

    #[test]
    fn public_https_urls_pass_and_other_shapes_do_not() {
        assert!(check_url("https://api.openai.com/v1", false).is_ok());
        assert!(check_url("https://8.8.8.8/", false).is_ok());
        for raw in [
            "http://api.openai.com/v1",
            "ftp://api.openai.com/",
            "https://user:pw@api.openai.com/",
            "https://api.openai.com/v1?x=1",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(check_url(raw, false).is_err(), "{raw}");
        }
        let err = check_url("http://api.openai.com", false).unwrap_err();
        assert!(err.to_string().starts_with("base_url: "));
    }
}
