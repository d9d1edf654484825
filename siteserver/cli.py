"""`siteserver` command line (also `python -m siteserver`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from siteserver.config import ConfigError, PrimaryConfig, SiteConfig, load_config


def _primary_run(args: argparse.Namespace) -> int:
    from siteserver.primary import run

    config = load_config(args.config)
    if not isinstance(config, PrimaryConfig):
        raise ConfigError(f'{args.config}: role is {config.role!r}; `primary run` needs role = "primary"')
    return run(config)


def _site_enroll(args: argparse.Namespace) -> int:
    from siteserver.site.errors import EnrollmentError
    from siteserver.site.identity import enroll

    config = load_config(args.config)
    if not isinstance(config, SiteConfig):
        raise ConfigError(f'{args.config}: role is {config.role!r}; `site enroll` needs role = "site"')
    try:
        url = enroll(config, args.token)
    except EnrollmentError as e:
        print(f"siteserver: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"siteserver: cannot write the site's files in {config.data_dir}: {e}", file=sys.stderr)
        return 2
    print(f"site {config.site_id!r} enrolled with the primary at {url}; identity in {config.data_dir}")
    return 0


def _site_config(args: argparse.Namespace, command: str) -> SiteConfig:
    config = load_config(args.config)
    if not isinstance(config, SiteConfig):
        raise ConfigError(f'{args.config}: role is {config.role!r}; `{command}` needs role = "site"')
    return config


def _site_run(args: argparse.Namespace) -> int:
    from siteserver.site.app import run
    from siteserver.site.errors import NotEnrolled

    config = _site_config(args, "site run")
    try:
        return run(config)
    except NotEnrolled as e:
        print(f"siteserver: {e}", file=sys.stderr)
        return 2


def _status(args: argparse.Namespace) -> int:
    from siteserver.site.cli_status import show_status

    return show_status(_site_config(args, "status"))


def _report_reconcile(args: argparse.Namespace) -> int:
    from siteserver.site.cli_report import reconcile

    config = _site_config(args, "report reconcile")
    return reconcile(config, since=args.since, until=args.until, form=args.format, output=args.output)


def _demo(args: argparse.Namespace) -> int:
    from siteserver.demo import run_demo

    return run_demo(directory=args.dir, port=args.port, check=args.check)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siteserver",
        description="Branch-office site server for print management, and its reference primary.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    primary = sub.add_parser("primary", help="the primary application server")
    psub = primary.add_subparsers(dest="action", required=True, metavar="ACTION")
    prun = psub.add_parser("run", help="run one primary application server")
    prun.add_argument("--config", required=True, metavar="FILE", help="primary TOML configuration")
    prun.set_defaults(func=_primary_run)

    site = sub.add_parser("site", help="the branch site server")
    ssub = site.add_subparsers(dest="action", required=True, metavar="ACTION")
    senroll = ssub.add_parser(
        "enroll", help="first start of a branch: make the key pair, register with the primary"
    )
    senroll.add_argument("--config", required=True, metavar="FILE", help="site TOML configuration")
    senroll.add_argument(
        "--token", required=True, metavar="TOKEN", help="the one-time enrollment token from the primary"
    )
    senroll.set_defaults(func=_site_enroll)
    srun = ssub.add_parser("run", help="run the site server")
    srun.add_argument("--config", required=True, metavar="FILE", help="site TOML configuration")
    srun.set_defaults(func=_site_run)

    status = sub.add_parser(
        "status", help="a running site's mode, primary endpoints, last sync and journal backlog"
    )
    status.add_argument("--config", required=True, metavar="FILE", help="site TOML configuration")
    status.set_defaults(func=_status)

    report = sub.add_parser("report", help="reports of a running site")
    rsub = report.add_subparsers(dest="action", required=True, metavar="ACTION")
    rrec = rsub.add_parser(
        "reconcile",
        help="a reconciliation report: every journal entry of a window checked against the primary's ledger"
        " (exit 0: the books agree; 1: they do not, or cannot be verified; 2: usage; 3: site not running)",
    )
    rrec.add_argument("--config", required=True, metavar="FILE", help="site TOML configuration")
    rrec.add_argument(
        "--since", metavar="T", help="ISO 8601 start of the window (default: 30 days before --until)"
    )
    rrec.add_argument("--until", metavar="T", help="ISO 8601 end of the window (default: now)")
    rrec.add_argument("--format", choices=("json", "csv", "html"), default="json")
    rrec.add_argument("--output", metavar="PATH", help="write it here (default: standard output)")
    rrec.set_defaults(func=_report_reconcile)

    demo = sub.add_parser("demo", help="a primary with sample data on loopback, in one command")
    demo.add_argument("--dir", default=None, help="keep the demo's files here (default: a new temp dir)")
    demo.add_argument("--port", type=int, default=9191, help="primary port (next free one if taken)")
    demo.add_argument(
        "--check", action="store_true", help="set up, check a login works, print, stop (for scripts)"
    )
    demo.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"siteserver: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
