//! Models already in the local Hugging Face cache, named as a user knows them: a Hub id
//! (`dandelin/vilt-b32-finetuned-vqa`) or the cache's repository folder
//! (`…/hub/models--dandelin--vilt-b32-finetuned-vqa`), resolved to the snapshot folder that
//! holds config.json, as `from_pretrained` resolves them offline. Nothing is downloaded.

use std::path::{Component, Path, PathBuf};

use super::config::CONFIG_FILE;

/// The snapshot folder `model` stands for, or `model` itself when it is a model folder already
/// or names nothing in the cache (loading then says what is missing).
pub fn resolve(model: &Path) -> PathBuf {
    if model.join(CONFIG_FILE).is_file() {
        return model.to_path_buf();
    }
    let repo = match hub_id(model) {
        Some((owner, name)) if !model.exists() => {
            cache_dir().map(|cache| cache.join(format!("models--{owner}--{name}")))
        }
        _ => Some(model.to_path_buf()),
    };
    repo.and_then(|repo| snapshot(&repo))
        .unwrap_or_else(|| model.to_path_buf())
}

/// `owner/name`, when `model` has that shape (two plain components).
pub fn hub_id(model: &Path) -> Option<(String, String)> {
    match model.components().collect::<Vec<_>>().as_slice() {
        [Component::Normal(owner), Component::Normal(name)] => Some((
            owner.to_string_lossy().into_owned(),
            name.to_string_lossy().into_owned(),
        )),
        _ => None,
    }
}

/// Where huggingface_hub keeps its downloads: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| {
            let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
            Some(cache.join("huggingface").join("hub"))
        })
}

/// Why `repo`, a repository folder of the cache (`models--owner--name`, or any folder with
/// `snapshots/`), resolves to no snapshot; `None` when it does, is missing, or is no such
/// folder.
pub fn unresolved(repo: &Path) -> Option<String> {
    let snapshots = repo.join("snapshots");
    let is_repo = repo
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("models--"))
        || snapshots.is_dir();
    if !is_repo || !repo.is_dir() || snapshot(repo).is_some() {
        return None;
    }
    let with_config: Vec<String> = std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(CONFIG_FILE).is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let named = std::fs::read_to_string(repo.join("refs").join("main"))
        .ok()
        .map(|revision| revision.trim().to_owned());
    Some(match (named, with_config.as_slice()) {
        (_, []) if !snapshots.is_dir() => format!("it has no {} folder", snapshots.display()),
        (_, []) => format!(
            "no snapshot in {} holds a {CONFIG_FILE} (an interrupted download?)",
            snapshots.display()
        ),
        (Some(revision), _) => format!(
            "refs/main names snapshot {revision:?}, which has no {CONFIG_FILE}, and the snapshots that have one ({}) leave the choice open",
            with_config.join(", ")
        ),
        (None, _) => format!(
            "it has no refs/main to choose among the snapshots {}",
            with_config.join(", ")
        ),
    })
}

/// The snapshot of a cache repository folder that `refs/main` names, else its only snapshot;
/// `None` when neither holds a config.json.
fn snapshot(repo: &Path) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    let named = std::fs::read_to_string(repo.join("refs").join("main"))
        .ok()
        .map(|revision| snapshots.join(revision.trim()));
    let has_config = |dir: &PathBuf| dir.join(CONFIG_FILE).is_file();
    named.filter(has_config).or_else(|| {
        let mut found = std::fs::read_dir(&snapshots)
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(has_config);
        let only = found.next()?;
        found.next().is_none().then_some(only)
    })
}
