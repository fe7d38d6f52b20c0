//! Names a user types (methods, answers) matched to the valid ones: the nearest valid name to
//! suggest for a typo.

/// The name among `candidates` nearest `key` by edit distance, when it is a typo away: at most
/// 2 edits, and fewer than half the name's letters. Ties keep the first.
pub fn nearest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|name| (edit_distance(key, name), name))
        .filter(|&(d, name)| d <= 2 && 2 * d < name.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

/// Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("grün", "grun"), 1);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn nearest_takes_the_closest_name_a_typo_away() {
        let names = ["chefer", "rollout", "dsmi", "dsmi-grad"];
        assert_eq!(nearest("chefr", names), Some("chefer"));
        assert_eq!(nearest("dsmi-gradd", names), Some("dsmi-grad"));
        assert_eq!(nearest("dsm", names), Some("dsmi"));
        // two edits of a four-letter name are half of it: too far to be a typo
        assert_eq!(nearest("lime", names), None);
        assert_eq!(nearest("", names), None);
    }
}
