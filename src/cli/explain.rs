//! `stackc explain CODE`: the long description of a diagnostic code.

use crate::diag::{Code, did_you_mean};

pub fn run(code: Option<&str>) -> u8 {
    let Some(code) = code else {
        let width = Code::ALL.iter().map(|c| c.full().len()).max().unwrap_or(0);
        for c in Code::ALL {
            println!("{:<width$}  {}", c.full(), c.title());
        }
        return 0;
    };
    match Code::parse(code) {
        Some(c) => {
            println!("{}: {}\n\n{}", c.full(), c.title(), c.explanation());
            0
        }
        None => {
            let name = code.strip_prefix("stackc::").unwrap_or(code);
            match did_you_mean(name, Code::ALL.iter().map(|c| c.name())) {
                Some(m) => eprintln!("error: unknown code `{code}`; did you mean `{m}`?"),
                None => eprintln!("error: unknown code `{code}`; `stackc explain` lists them all"),
            }
            1
        }
    }
}
