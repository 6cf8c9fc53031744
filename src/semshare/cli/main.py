"""`semshare` command line: parsing and dispatch only. Each area's subcommands live in their own module
(data, runs, experiments, search); a handler parses, makes one library call, prints.

User errors (bad files, bad flags, bad configs) print one line `semshare: error: ...` and exit with 2.
"""

from __future__ import annotations

import argparse
import copy
import errno
import logging
import sys

from semshare import __version__
from semshare.cli import data, experiments, runs, search
from semshare.cli.common import RegistryChoices
from semshare.errors import SemshareError, plain

logger = logging.getLogger("semshare")

EXIT_USER_ERROR = 2
QUIET_COMMANDS = ("search", "index", "serve")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a help text lists a registry's names only where it asks for them
    (`%(choices)s`): argparse joins every action's choices when it draws its help, which would import the
    modules that fill the registry (torch, for the image backbones) to print `extract --help`."""

    def _expand_help(self, action):
        if isinstance(action.choices, RegistryChoices) and "%(choices)" not in (action.help or ""):
            action = copy.copy(action)
            action.choices = None
        return super()._expand_help(action)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose arguments may be added when it is first used (`populate_on_use`): a
    subcommand built from a registry reads it only when that subcommand is parsed or its help is shown."""

    _populate = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def populate_on_use(self, populate) -> None:
        self._populate = populate

    def _populated(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(self, args=None, namespace=None):
        self._populated()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._populated()
        return super().format_help()

    def format_usage(self) -> str:
        self._populated()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="semshare", description="Label-wise cross-modal retrieval with Semantic Sharing.")
    parser.add_argument("--version", action="version", version=f"semshare {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging (search, index and serve log nothing below warnings without it)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for add in (data.add_make_synthetic, data.add_inspect, data.add_import, data.add_extract, data.add_prepare_text,
                data.add_extract_text, runs.add_evaluate_embeddings, runs.add_train, runs.add_evaluate, runs.add_embed,
                runs.add_fit_instance, runs.add_fit_hash, runs.add_export,
                experiments.add_benchmark, experiments.add_compare, experiments.add_sweep, experiments.add_plot,
                search.add_index, search.add_search, search.add_serve, experiments.add_demo, experiments.add_figures):
        add(sub)
    return parser


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is: its writes end as an interrupted one's do (atomic, resumable)."""


def _stop_on_sigterm() -> None:
    import signal
    import threading

    def stop(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the commands that answer a question print the answer only; their INFO lines come with -v
    quiet = args.command in QUIET_COMMANDS
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when logging was configured before (a second main() in a process)
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    _stop_on_sigterm()
    try:
        return int(args.handler(args) or 0)
    except SemshareError as exc:
        if args.debug:
            raise
        message = f"semshare: error: {plain(' '.join(str(exc).split()))}"
        # a name read from a broken file may hold lone surrogates: shown escaped, never a UnicodeEncodeError
        print(message.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.errno not in DISK_FULL or args.debug:
            raise
        where = exc.filename or getattr(args, "out", None) or getattr(args, "run_dir", None) or "the output folder"
        print(f"semshare: error: {where}: {exc.strerror} (the disk or file system is full, or the file too large); "
              "free space and run the command again: a run resumes with --resume, other writes left nothing behind",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print("semshare: stopped by SIGTERM (a run continues from its last checkpoint with --resume)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("semshare: interrupted", file=sys.stderr)
        return 130
