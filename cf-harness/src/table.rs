//! Tables for people (`comfy-table`): left-aligned columns two spaces apart,
//! no borders, no trailing spaces.

use comfy_table::{presets::NOTHING, CellAlignment, Table};

/// `header` over `rows`; columns whose cells are all figures (a number, or one
/// with its unit such as `12.3µs`, `45%`, `2.1x`; `-` for none) are aligned right.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.to_vec());
    let numeric: Vec<bool> = (0..header.len())
        .map(|c| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(c).is_some_and(|v| {
                        v.parse::<f64>().is_ok()
                            || v == "-"
                            || v.starts_with(|ch: char| ch.is_ascii_digit())
                    })
                })
        })
        .collect();
    for r in rows {
        t.add_row(r);
    }
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, 2));
        if numeric.get(i).copied().unwrap_or(false) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trailing_spaces() {
        let s = table(
            &["NAME", "N"],
            vec![
                vec!["a".into(), "1".into()],
                vec!["bbbb".into(), "22".into()],
            ],
        );
        assert!(s.lines().all(|l| l == l.trim_end()), "{s:?}");
        assert!(s.lines().next().unwrap().starts_with("NAME"), "{s:?}");
        assert_eq!(s.lines().count(), 3, "{s:?}");
    }

    #[test]
    fn figures_are_aligned_right() {
        let s = table(
            &["PATH", "TIME"],
            vec![
                vec!["a".into(), "12.3µs".into()],
                vec!["b".into(), "812ns".into()],
            ],
        );
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[1].ends_with("12.3µs") && lines[2].ends_with(" 812ns"),
            "{s:?}"
        );
        let width = |l: &str| l.chars().count();
        assert_eq!(width(lines[1]), width(lines[2]), "{s:?}");
    }
}
