//! Command-line parsing shared by the binaries (`cf-node`, `cfctl`).

use std::process::ExitCode;

/// Exit status of a command line that does not parse (`EX_USAGE` of
/// sysexits.h): apart from every answer a command gives (`cfctl try`: 2
/// contention, 3 retained) and from its errors (1).
pub const USAGE_EXIT: u8 = 64;

/// Parse the command line: `--help` and `--version` print and exit 0, a
/// usage error prints clap's message and exits [`USAGE_EXIT`] (`Err`).
pub fn parse<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(USAGE_EXIT)
        } else {
            ExitCode::SUCCESS
        }
    })
}
