//! A gateway's id in its control plane's fleet view: the one rule, checked
//! by the gateway at start and by the control plane on every poll, and a
//! default that tells two gateways apart.

use std::path::Path;

/// The rule, in words, as every refusal states it.
pub const ID_RULE: &str = "an id is 1 to 128 characters of A-Z, a-z, 0-9, `.`, `_`, `:`, `-`";

/// The file in a gateway's cache directory that keeps its default id.
pub const ID_FILE: &str = "gateway-id";

/// An id that breaks [`ID_RULE`]. Shows the id only if it is printable and
/// short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway id {shown}: {ID_RULE}")]
pub struct BadGatewayId {
    shown: String,
}

/// Checks `id` against [`ID_RULE`].
pub fn check_id(id: &str) -> Result<(), BadGatewayId> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        return Ok(());
    }
    let shown = if id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()) {
        format!("`{id}`")
    } else {
        format!("of {} bytes", id.len())
    };
    Err(BadGatewayId { shown })
}

/// Whether a poll under `id` is the gateway whose own fleet token is named
/// `name`: `id` is `name`, or `name:` and a suffix, so that one credential
/// serves a host's several processes (nginx workers polling as
/// `edge-1:pid4242`). Token names hold no `:`, so no name owns another's
/// ids.
pub fn owned_by(id: &str, name: &str) -> bool {
    id.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.len() > 1 && rest.starts_with(':'))
}

/// The id of a gateway that was given none: its host name and a random
/// suffix, kept in `cache_dir` (if it has one) so that it survives a
/// restart. Two gateways on one host, or two hosts of one name, differ.
pub fn default_id(prefix: &str, cache_dir: Option<&Path>) -> String {
    let file = cache_dir.map(|dir| dir.join(ID_FILE));
    if let Some(kept) = file
        .as_deref()
        // A regular file of its own: never read through a link.
        .filter(|path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file()))
        .and_then(|path| keyscope_runtime::files::read_text(path, 256).ok())
        .map(|text| text.trim().to_owned())
        .filter(|id| check_id(id).is_ok())
    {
        return kept;
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    let host = if host.is_empty() { prefix } else { &host };
    let id = format!("{host}-{:016x}", rand::random::<u64>());
    if let Some(path) = file {
        // Through a new file renamed over the path: whatever was there (a
        // FIFO, a link to a file of someone else's) is replaced, never
        // opened. Best effort: without it, the next start picks another id.
        let line = format!("{id}\n");
        if let Err(error) = keyscope_bundle::cache::write_atomically(&path, &[line.as_bytes()]) {
            tracing::warn!(%error, path = %path.display(), "gateway: could not keep its id");
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_owns_itself_and_its_suffixed_ids_only() {
        assert!(owned_by("edge-1", "edge-1"));
        assert!(owned_by("edge-1:pid42", "edge-1"));
        assert!(!owned_by("edge-10", "edge-1"));
        assert!(!owned_by("edge-1.b", "edge-1"));
        assert!(!owned_by("edge", "edge-1"));
        assert!(!owned_by("edge-1:", "edge-1"), "a suffix is not empty");
    }

    #[test]
    fn the_rule_names_itself_and_the_id_when_it_is_safe_to() {
        assert!(check_id("eu-west-1.edge:2").is_ok());
        let error = check_id("eu-west/edge-1").unwrap_err().to_string();
        assert!(
            error.contains("`eu-west/edge-1`") && error.contains(ID_RULE),
            "{error}"
        );
        let error = check_id("a\nb").unwrap_err().to_string();
        assert!(error.contains("of 3 bytes"), "{error}");
        assert!(check_id("").is_err());
        assert!(check_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn a_default_id_is_kept_in_the_cache_directory_and_differs_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = default_id("gateway", Some(dir.path()));
        check_id(&first).unwrap();
        assert_eq!(default_id("gateway", Some(dir.path())), first);
        assert_ne!(default_id("gateway", None), default_id("gateway", None));
    }

    #[test]
    fn a_fifo_or_a_link_in_place_of_the_id_file_is_replaced_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ID_FILE);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Returns at once (a FIFO opened for writing would block).
        let id = default_id("gateway", Some(dir.path()));
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), id);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "mine").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let id = default_id("gateway", Some(dir.path()));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), id);
    }
}
