//! A unified line diff, for `inject --dry-run`.
//!
//! Myers' O((N+M)·D) algorithm finds a shortest edit script; the script is
//! then cut into hunks with three lines of context, printed the way GNU
//! `diff -u` prints them. Task definitions are a few hundred lines and an
//! injection changes a few dozen, so D is small and so is the memory (the
//! search keeps O(D²) integers to trace the path back).

use std::fmt::Write as _;

/// Lines of unchanged context around each change.
const CONTEXT: usize = 3;

/// A unified diff (`--- input` / `+++ injected` headers, `@@` hunks with three
/// lines of context) that turns `before` into `after`, line by line. Empty when
/// the two have the same lines.
///
/// `inject --dry-run` prints `diff(&output.before, &output.json)`: both sides
/// are printed in the same style, so the diff shows only what injection changed.
/// A difference only in the presence of a final newline is not shown.
pub fn diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let ops = edit_script(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Equal)) {
        return String::new();
    }

    // Line positions (0-based) in `a` and `b` before each operation.
    let mut positions = Vec::with_capacity(ops.len() + 1);
    let (mut x, mut y) = (0usize, 0usize);
    for op in &ops {
        positions.push((x, y));
        match op {
            Op::Equal => (x, y) = (x + 1, y + 1),
            Op::Delete => x += 1,
            Op::Insert => y += 1,
        }
    }
    positions.push((x, y));

    let changes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Equal))
        .map(|(i, _)| i)
        .collect();

    let mut out = String::from("--- input\n+++ injected\n");
    let mut next = 0;
    while let Some(&first) = changes.get(next) {
        // Extend the hunk over every change whose gap of equal lines is small
        // enough that the two contexts would touch.
        let mut last = first;
        next += 1;
        while let Some(&change) = changes.get(next) {
            if change - last - 1 > 2 * CONTEXT {
                break;
            }
            last = change;
            next += 1;
        }
        let start = first.saturating_sub(CONTEXT);
        let end = (last + 1 + CONTEXT).min(ops.len());
        let (a_start, b_start) = positions[start];
        let (a_end, b_end) = positions[end];
        out.push_str("@@ -");
        push_range(&mut out, a_start, a_end - a_start);
        out.push_str(" +");
        push_range(&mut out, b_start, b_end - b_start);
        out.push_str(" @@\n");
        for (op, &(x, y)) in ops[start..end].iter().zip(&positions[start..end]) {
            let (sign, line) = match op {
                Op::Equal => (' ', a[x]),
                Op::Delete => ('-', a[x]),
                Op::Insert => ('+', b[y]),
            };
            out.push(sign);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `start,count` as `diff -u` prints it: 1-based, the count left out when it
/// is 1, and an empty range named by the line before it.
fn push_range(out: &mut String, start: usize, count: usize) {
    let _ = match count {
        0 => write!(out, "{start},0"),
        1 => write!(out, "{}", start + 1),
        _ => write!(out, "{},{count}", start + 1),
    };
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Equal,
    Delete,
    Insert,
}

/// A shortest edit script from `a` to `b` (Myers 1986, greedy forward search
/// with the furthest-reaching x kept per diagonal, then traced back).
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (n + m) as usize;
    // Diagonal k = x - y lives at index k + offset; one spare slot each side
    // so that k ± 1 is always in range.
    let offset = max as isize + 1;
    let at = |k: isize| (k + offset) as usize;
    let mut v = vec![0isize; 2 * max + 3];
    // trace[d] holds v for diagonals -d..=d as it was before round d.
    let mut trace: Vec<Vec<isize>> = Vec::new();

    'search: for d in 0..=max as isize {
        trace.push(v[at(-d)..=at(d)].to_vec());
        for k in (-d..=d).step_by(2) {
            let mut x = if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) {
                v[at(k + 1)]
            } else {
                v[at(k - 1)] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                break 'search;
            }
        }
    }

    let mut ops = Vec::with_capacity(max);
    let (mut x, mut y) = (n, m);
    for (d, before) in trace.iter().enumerate().rev() {
        let d = d as isize;
        if d == 0 {
            while x > 0 && y > 0 {
                ops.push(Op::Equal);
                x -= 1;
                y -= 1;
            }
            break;
        }
        let get = |k: isize| before[(k + d) as usize];
        let k = x - y;
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = get(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            ops.push(Op::Equal);
            x -= 1;
            y -= 1;
        }
        ops.push(if x == prev_x { Op::Insert } else { Op::Delete });
        (x, y) = (prev_x, prev_y);
    }
    ops.reverse();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_give_an_empty_diff() {
        assert_eq!(diff("a\nb\n", "a\nb\n"), "");
        assert_eq!(diff("", ""), "");
    }

    #[test]
    fn one_changed_line_is_shown_with_three_lines_of_context() {
        let before = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let after = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            diff(before, after),
            "--- input\n+++ injected\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let before = "a\n1\n2\n3\n4\n5\n6\n7\n8\nb\n";
        let after = "A\n1\n2\n3\n4\n5\n6\n7\n8\nB\n";
        assert_eq!(
            diff(before, after),
            "--- input\n+++ injected\n\
             @@ -1,4 +1,4 @@\n-a\n+A\n 1\n 2\n 3\n\
             @@ -7,4 +7,4 @@\n 6\n 7\n 8\n-b\n+B\n"
        );
    }

    #[test]
    fn close_changes_share_one_hunk() {
        let before = "a\n1\n2\n3\n4\n5\n6\nb\n";
        let after = "A\n1\n2\n3\n4\n5\n6\nB\n";
        assert_eq!(
            diff(before, after),
            "--- input\n+++ injected\n@@ -1,8 +1,8 @@\n-a\n+A\n 1\n 2\n 3\n 4\n 5\n 6\n-b\n+B\n"
        );
    }

    #[test]
    fn insertion_into_empty_text_names_line_zero() {
        assert_eq!(
            diff("", "x\ny\n"),
            "--- input\n+++ injected\n@@ -0,0 +1,2 @@\n+x\n+y\n"
        );
    }

    #[test]
    fn pure_insertion_keeps_surrounding_lines_as_context() {
        assert_eq!(
            diff("a\nb\n", "a\nnew\nb\n"),
            "--- input\n+++ injected\n@@ -1,2 +1,3 @@\n a\n+new\n b\n"
        );
    }

    #[test]
    fn deletion_of_a_single_line_omits_the_count() {
        assert_eq!(
            diff("only\n", ""),
            "--- input\n+++ injected\n@@ -1 +0,0 @@\n-only\n"
        );
    }

    #[test]
    fn edit_script_is_minimal() {
        // "abcabba" -> "cbabac" has a shortest edit script of 5 (Myers' example).
        let a: Vec<&str> = "a b c a b b a".split(' ').collect();
        let b: Vec<&str> = "c b a b a c".split(' ').collect();
        let ops = edit_script(&a, &b);
        let edits = ops.iter().filter(|op| !matches!(op, Op::Equal)).count();
        assert_eq!(edits, 5);
        // Applying the script to `a` gives `b`.
        let (mut x, mut y, mut rebuilt) = (0, 0, Vec::new());
        for op in ops {
            match op {
                Op::Equal => {
                    rebuilt.push(a[x]);
                    x += 1;
                    y += 1;
                }
                Op::Delete => x += 1,
                Op::Insert => {
                    rebuilt.push(b[y]);
                    y += 1;
                }
            }
        }
        assert_eq!(rebuilt, b);
    }
}
