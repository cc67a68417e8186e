//! Marathon's label selector (`?label=`): comma-separated terms, all of which must match.
//! `key`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`; other characters backslash-escaped.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Exists(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Vec<Term>);

fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn word(&mut self) -> Option<String> {
        self.skip_ws();
        let mut s = String::new();
        while let Some(&c) = self.chars.peek() {
            if c == '\\' {
                self.chars.next();
                s.push(self.chars.next()?);
            } else if plain(c) {
                s.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        (!s.is_empty()).then_some(s)
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        let snapshot = self.chars.clone();
        for t in tok.chars() {
            if self.chars.next() != Some(t) {
                self.chars = snapshot;
                return false;
            }
        }
        true
    }

    fn list(&mut self) -> Option<Vec<String>> {
        if !self.eat("(") {
            return None;
        }
        let mut out = Vec::new();
        loop {
            out.push(self.word()?);
            if self.eat(")") {
                return Some(out);
            }
            if !self.eat(",") {
                return None;
            }
        }
    }
}

impl Selector {
    pub fn parse(input: &str) -> Result<Self, String> {
        let err = || format!("Can not parse label selector {input}");
        let mut lx = Lexer {
            chars: input.chars().peekable(),
        };
        let mut terms = Vec::new();
        loop {
            let key = lx.word().ok_or_else(err)?;
            let term = if lx.eat("==") {
                Term::Eq(key, lx.word().ok_or_else(err)?)
            } else if lx.eat("!=") {
                Term::Ne(key, lx.word().ok_or_else(err)?)
            } else if lx.eat("notin") {
                Term::NotIn(key, lx.list().ok_or_else(err)?)
            } else if lx.eat("in") {
                Term::In(key, lx.list().ok_or_else(err)?)
            } else {
                Term::Exists(key)
            };
            terms.push(term);
            lx.skip_ws();
            match lx.chars.next() {
                None => return Ok(Selector(terms)),
                Some(',') => continue,
                Some(_) => return Err(err()),
            }
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Exists(k) => labels.contains_key(k),
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k).is_some_and(|x| x != v),
            Term::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Term::NotIn(k, vs) => labels.get(k).is_some_and(|x| !vs.contains(x)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn terms() {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        assert!(Selector::parse("env").unwrap().matches(&l));
        assert!(Selector::parse("env==prod, tier!=db").unwrap().matches(&l));
        assert!(Selector::parse("env in (dev, prod)").unwrap().matches(&l));
        assert!(!Selector::parse("env notin (prod)").unwrap().matches(&l));
        assert!(
            !Selector::parse("owner!=x").unwrap().matches(&l),
            "!= needs the label to exist"
        );
        assert!(!Selector::parse("env==prod,missing").unwrap().matches(&l));
        assert!(Selector::parse("a\\ b==c")
            .unwrap()
            .matches(&labels(&[("a b", "c")])));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Selector::parse("env==").unwrap_err(),
            "Can not parse label selector env=="
        );
        assert!(Selector::parse("env in prod").is_err());
        assert!(Selector::parse("").is_err());
    }
}
