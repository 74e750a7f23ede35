//! The SSRF guard of provider base URLs (and of server tools' URLs). A
//! provider's `base_url` is where Lambent sends the provider key and the
//! user's messages, so it must never point inside the deployment: link-local and cloud metadata addresses are
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
/// Ordered by how strictly a class is refused: the greater is the stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that reach an
/// IPv4 host (so they are judged as that host), with the least class the
/// form itself has:
///
/// * `::a.b.c.d` (IPv4-compatible, `::/96`; `::` and `::1` are handled
///   before this), `::ffff:a.b.c.d` (IPv4-mapped), `::ffff:0:a.b.c.d`
///   (IPv4-translated, `::ffff:0:0:0/96`): the last 32 bits;
/// * NAT64: the well-known prefix `64:ff9b::/96` (RFC 6052): the last 32
///   bits; the local-use prefix `64:ff9b:1::/48` (RFC 8215) and the rest of
///   `64:ff9b::/32`: the last 32 bits (the usual /96 layout), and never less
///   than non-public, since a local translator is inside the network;
/// * 6to4, `2002::/16`: segments 1 and 2.
fn embedded_v4(v6: Ipv6Addr) -> Option<(Ipv4Addr, AddressClass)> {
    let seg = v6.segments();
    let [.., a, b, c, d] = v6.octets();
    let last32 = Ipv4Addr::new(a, b, c, d);
    match seg {
        [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((last32, AddressClass::Public)),
        [0x64, 0xff9b, ..] => Some((last32, AddressClass::NonPublic)),
        [0x2002, high, low, ..] => Some((
            Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)),
            AddressClass::Public,
        )),
        _ => None,
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddressClass {
    // `::` and `::1` are inside `::/96` but are IPv6's own unspecified and
    // loopback addresses.
    if v6.is_unspecified() || v6.is_loopback() {
        return AddressClass::NonPublic;
    }
    if let Some((v4, least)) = embedded_v4(v6) {
        return classify_v4(v4).max(least);
    }
    let seg = v6.segments();
    // fd00:ec2::254 is the EC2 metadata service over IPv6.
    if (seg[0] & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        AddressClass::LinkLocalOrMetadata
    } else if (seg[0] & 0xfe00) == 0xfc00
        || v6.is_multicast()
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)
    {
        AddressClass::NonPublic
    } else {
        AddressClass::Public
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

/// Whether an address may be connected to. A refusal names the class of
/// the address ("a link-local or metadata address"), never the address: the
/// address may come from DNS, and a message that echoed it would let a
/// caller map the deployment's network by the names it resolves. Callers put
/// it in a sentence ("the host resolves to ...").
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    match classify(ip) {
        AddressClass::Public => Ok(()),
        AddressClass::NonPublic if allow_private => Ok(()),
        AddressClass::NonPublic => Err(Refused("a loopback, private or reserved address".into())),
        AddressClass::LinkLocalOrMetadata => {
            Err(Refused("a link-local or metadata address".into()))
        }
    }
}

/// Checks every address a host name resolved to; the refusal does not echo
/// the address.
pub fn check_resolved(
    addrs: impl IntoIterator<Item = IpAddr>,
    allow_private: bool,
) -> Result<(), Refused> {
    for ip in addrs {
        address_allowed(ip, allow_private)
            .map_err(|Refused(why)| Refused(format!("the host resolves to {why}")))?;
    }
    Ok(())
}

/// An address written as the URL's host.
fn host_address(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    address_allowed(ip, allow_private).map_err(|Refused(why)| Refused(format!("the host is {why}")))
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
        Some(Host::Ipv4(ip)) => host_address(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => host_address(IpAddr::V6(ip), allow_private)?,
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
            check_resolved(addrs.map(|a| a.ip()), allow_private)?;
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

    fn v6(raw: &str) -> IpAddr {
        IpAddr::V6(raw.parse().unwrap())
    }

    #[test]
    fn ipv6_forms_that_embed_an_ipv4_address_are_judged_as_that_address() {
        use AddressClass::*;
        for (raw, class) in [
            // IPv4-compatible, ::/96
            ("::a9fe:a9fe", LinkLocalOrMetadata),
            ("::169.254.169.254", LinkLocalOrMetadata),
            ("::127.0.0.1", NonPublic),
            ("::10.0.0.1", NonPublic),
            ("::192.168.1.1", NonPublic),
            ("::8.8.8.8", Public),
            // IPv4-mapped and IPv4-translated (::ffff:0:0:0/96)
            ("::ffff:169.254.169.254", LinkLocalOrMetadata),
            ("::ffff:0:169.254.169.254", LinkLocalOrMetadata),
            ("::ffff:0:a9fe:a9fe", LinkLocalOrMetadata),
            ("::ffff:0:127.0.0.1", NonPublic),
            ("::ffff:0:10.1.2.3", NonPublic),
            ("::ffff:0:8.8.8.8", Public),
            // NAT64, well-known prefix 64:ff9b::/96
            ("64:ff9b::169.254.169.254", LinkLocalOrMetadata),
            ("64:ff9b::a9fe:a9fe", LinkLocalOrMetadata),
            ("64:ff9b::127.0.0.1", NonPublic),
            ("64:ff9b::10.0.0.1", NonPublic),
            ("64:ff9b::172.16.0.1", NonPublic),
            ("64:ff9b::8.8.8.8", Public),
            // NAT64, local-use prefix 64:ff9b:1::/48: never public
            ("64:ff9b:1::169.254.169.254", LinkLocalOrMetadata),
            ("64:ff9b:1:abcd::a9fe:a9fe", LinkLocalOrMetadata),
            ("64:ff9b:1::10.0.0.1", NonPublic),
            ("64:ff9b:1::8.8.8.8", NonPublic),
            // 6to4, 2002::/16: the IPv4 address is in segments 1 and 2
            ("2002:a9fe:a9fe::", LinkLocalOrMetadata),
            ("2002:a9fe:a9fe:1::1", LinkLocalOrMetadata),
            ("2002:7f00:1::", NonPublic),
            ("2002:a00:1::1", NonPublic),
            ("2002:c0a8:101::", NonPublic),
            ("2002:808:808::1", Public),
            // IPv6's own unspecified and loopback addresses are unchanged.
            ("::", NonPublic),
            ("::1", NonPublic),
            // And so are the other IPv6 ranges.
            ("fe80::1", LinkLocalOrMetadata),
            ("fd00:ec2::254", LinkLocalOrMetadata),
            ("fd12::1", NonPublic),
            ("2001:db8::1", NonPublic),
            ("2606:4700::1111", Public),
        ] {
            assert_eq!(classify(v6(raw)), class, "{raw}");
        }
    }

    #[test]
    fn urls_with_embedded_ipv4_hosts_are_refused_as_their_ipv4_address() {
        for raw in [
            "https://[::a9fe:a9fe]/",
            "https://[::ffff:0:a9fe:a9fe]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[64:ff9b:1::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::1]/",
        ] {
            let err = check_url(raw, true).unwrap_err();
            assert_eq!(
                err.to_string(),
                "base_url: the host is a link-local or metadata address",
                "{raw}"
            );
            assert!(check_url(raw, false).is_err(), "{raw}");
        }
        for raw in [
            "https://[::127.0.0.1]/",
            "https://[::10.0.0.1]/",
            "https://[::ffff:0:10.0.0.1]/",
            "https://[64:ff9b::7f00:1]/",
            "https://[64:ff9b:1::808:808]/",
            "https://[2002:a00:1::]/",
        ] {
            assert!(check_url(raw, false).is_err(), "{raw}");
            assert!(check_url(raw, true).is_ok(), "{raw}");
        }
        assert!(check_url("https://[64:ff9b::808:808]/", false).is_ok());
        assert!(check_url("https://[2002:808:808::1]/", false).is_ok());
    }

    #[test]
    fn a_refused_resolved_address_is_not_echoed() {
        for (ip, allow_private) in [
            ("169.254.169.254", true),
            ("169.254.169.254", false),
            ("10.1.2.3", false),
            ("127.0.0.1", false),
            ("::ffff:0:a9fe:a9fe", true),
            ("64:ff9b::a9fe:a9fe", false),
            ("2002:a9fe:a9fe::1", true),
            ("fd00:ec2::254", true),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let public: IpAddr = "8.8.8.8".parse().unwrap();
            let err = check_resolved([public, addr], allow_private).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with("base_url: the host resolves to a "),
                "{message}"
            );
            assert!(!message.contains(ip), "{ip}: {message}");
            assert!(!message.contains(&addr.to_string()), "{ip}: {message}");
            assert!(!message.contains("8.8.8.8"), "{message}");
        }
        let err = check_resolved(["169.254.169.254".parse().unwrap()], true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "base_url: the host resolves to a link-local or metadata address"
        );
        assert!(check_resolved(["8.8.8.8".parse().unwrap()], false).is_ok());
        assert!(check_resolved(["10.0.0.1".parse().unwrap()], true).is_ok());
    }

    #[test]
    fn a_refused_literal_address_is_not_echoed_either() {
        let err = check_url("https://169.254.169.254/", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "base_url: the host is a link-local or metadata address"
        );
        let err = check_url("https://[::ffff:10.0.0.1]/", false).unwrap_err();
        assert!(!err.to_string().contains("10.0.0.1"), "{err}");
    }
}
