//! `mirotrail manpage`: one manual page, mirotrail(1), with every command and its options
//! (there are no separate pages per command to refer to) and the configuration keys.

use std::io::Write;

use clap::CommandFactory;

use super::Cli;

/// Renders the whole page (roff).
pub(crate) fn render(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    // Builds the argument list (value names, propagated settings) as `--help` sees it.
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    writeln!(w, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands() {
        render_command(w, &format!("mirotrail {}", sub.get_name()), sub)?;
    }
    w.write_all(crate::config::keys::man_section().as_bytes())?;
    man.render_extra_section(w)?;
    man.render_version_section(w)?;
    Ok(())
}

/// One command: its name and arguments, what it does, its options, then its own
/// subcommands (`emulate miro`).
fn render_command(w: &mut dyn Write, name: &str, cmd: &clap::Command) -> std::io::Result<()> {
    let positionals: Vec<String> = cmd
        .get_positionals()
        .map(|a| format!("<{}>", a.get_id().as_str().to_uppercase()))
        .collect();
    let has_subcommands = cmd.get_subcommands().next().is_some();
    writeln!(
        w,
        ".SS {}{}{}",
        escape(name),
        if positionals.is_empty() {
            String::new()
        } else {
            format!(" {}", positionals.join(" "))
        },
        if has_subcommands { " ..." } else { "" }
    )?;
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        for paragraph in about.to_string().split("\n\n") {
            writeln!(w, ".PP\n{}", escape(paragraph))?;
        }
    }
    for arg in cmd.get_arguments() {
        if arg.is_global_set() || arg.is_hide_set() {
            continue;
        }
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let flag = match (arg.get_long(), arg.get_short()) {
            (Some(l), Some(s)) => format!("\\fB-{s}\\fR, \\fB--{l}\\fR"),
            (Some(l), None) => format!("\\fB--{}\\fR", escape(l)),
            (None, Some(s)) => format!("\\fB-{s}\\fR"),
            (None, None) => format!("<{}>", id.to_uppercase()),
        };
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
            && (arg.get_long().is_some() || arg.get_short().is_some());
        let value = if takes_value {
            let names = arg
                .get_value_names()
                .map(|v| {
                    v.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| id.to_uppercase());
            format!(" <{names}>")
        } else {
            String::new()
        };
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().to_string())
            .collect();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let default = if defaults.is_empty() || !takes_value {
            String::new()
        } else {
            format!(" [default: {}]", defaults.join(", "))
        };
        writeln!(
            w,
            ".TP\n{flag}{value}\n{}{}",
            escape(&help),
            escape(&default)
        )?;
    }
    for sub in cmd.get_subcommands() {
        render_command(w, &format!("{name} {}", sub.get_name()), sub)?;
    }
    Ok(())
}

/// Escapes text for roff: backslashes, and lines starting with a dot or a quote.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
