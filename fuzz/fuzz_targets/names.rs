//! Every name parser of `ociregistry_actors::names` on the same input:
//! nothing panics, and whatever is accepted is safe to use in a file path
//! or URL and parses again to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry_actors::names::{Digest, NameError, Reference, RegistryName, RepoName, Tag};

/// Lower-case hex.
fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
        && !c.contains("..")
        && !c.contains("___")
        && !c.contains("._")
        && !c.contains("_.")
        && !c.contains(".-")
        && !c.contains("-.")
        && !c.contains("_-")
        && !c.contains("-_")
}

fn digest(s: &str) {
    let Ok(d) = Digest::parse(s) else { return };
    assert_eq!(d.as_str(), s);
    assert_eq!(d.to_string(), s);
    assert_eq!(d.hex().len(), 64, "{s:?}");
    assert!(is_hex(d.hex()), "{s:?}");
    assert_eq!(format!("sha256:{}", d.hex()), s);
    assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
}

fn tag(s: &str) {
    let Ok(t) = Tag::parse(s) else { return };
    let t = t.as_str();
    assert_eq!(t, s);
    assert!(!t.is_empty() && t.len() <= 128, "{s:?}");
    assert!(!t.starts_with(['.', '-']), "{s:?}");
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "{s:?}"
    );
}

fn repository(s: &str) {
    let Ok(r) = RepoName::parse(s) else { return };
    assert_eq!(r.as_str(), s);
    assert!(!s.is_empty() && s.len() <= 255, "{s:?}");
    assert!(s.split('/').all(component_ok), "{s:?}");
    assert_eq!(RepoName::parse(r.as_str()), Ok(r.clone()));
    let hub = RegistryName::parse("docker.io").expect("docker.io");
    // On Docker Hub the name is valid too (it parses back), or refused.
    if let Ok(on_hub) = r.clone().for_registry(&hub) {
        assert_eq!(RepoName::parse(on_hub.as_str()), Ok(on_hub.clone()), "{s:?}");
        assert!(on_hub.as_str().ends_with(s));
    }
}

fn registry(s: &str) {
    let Ok(h) = RegistryName::parse(s) else {
        return;
    };
    let h = h.as_str();
    assert!(!h.is_empty() && h.len() <= 253, "{s:?}");
    assert_eq!(h, h.to_ascii_lowercase());
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')),
        "{s:?} -> {h:?}"
    );
    assert!(!h.contains(".."), "{s:?}");
    assert_eq!(
        RegistryName::parse(h).map(|r| r.as_str().to_string()),
        Ok(h.to_string())
    );
}

fn reference(s: &str) {
    match Reference::parse(s) {
        Ok(Reference::Digest(d)) => {
            assert!(s.contains(':'));
            assert_eq!(d.as_str(), s);
        }
        Ok(Reference::Tag(t)) => {
            assert!(!s.contains(':'));
            assert_eq!(t.as_str(), s);
        }
        Err(NameError::Digest(_)) => assert!(s.contains(':')),
        Err(NameError::Tag(_)) => assert!(!s.contains(':')),
        Err(e) => panic!("{s:?}: unexpected {e:?}"),
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    digest(&s);
    tag(&s);
    repository(&s);
    registry(&s);
    reference(&s);
});
