"""``umonitor instrument``: C sources rewritten to log function entries and returns."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from umonitor.cli.app import main
from umonitor.errors import UsageError


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the rewritten files (same names) and umonitor_instrument.h.",
)
@click.option(
    "--functions",
    "globs",
    multiple=True,
    metavar="GLOB",
    help="Instrument only functions whose name matches GLOB (repeatable; default: all).",
)
@click.option("--skip-inline", is_flag=True, help="Leave 'static inline' functions as they are.")
def instrument(
    sources: tuple[Path, ...], outdir: Path, globs: tuple[str, ...], skip_inline: bool
) -> None:
    """Rewrite C SOURCES so that each function logs its entry, with its parameters'
    values, and each return, with the value returned (UMON_ENTER and UMON_EXIT
    records of the C guest library).

    '#line' directives keep the original file and line for the compiler and the
    records. Compile the rewritten files as the originals, with the C library's
    directory on the include path (-I) and umonitor.c linked in. Functions the parser
    cannot read (a macro where it expects a type, say) are left as they are, and said
    so on stderr. See docs/instrument.md.
    """
    from umonitor.instrument.rewrite import HEADER, rewrite

    names = [src.name for src in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(
            f"two sources are named {twice[0]}: instrument them into separate directories"
        )
    texts: dict[Path, bytes] = {}
    for src in sources:
        try:
            texts[src] = src.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {src}: {exc.strerror}") from exc
    if outdir.resolve() in {src.resolve().parent for src in sources}:
        raise UsageError(f"{outdir} holds the sources: the output needs a directory of its own")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parents[1] / "guest" / "c" / HEADER, outdir / HEADER)
        for src, text in texts.items():
            result = rewrite(text, str(src), globs or ("*",), skip_inline=skip_inline)
            (outdir / src.name).write_bytes(result.text)
            for name, line, why in result.skipped:
                click.echo(f"umonitor: {src}:{line}: {name} left as is: {why}", err=True)
            click.echo(
                f"{outdir / src.name}: {len(result.instrumented)} functions instrumented, "
                f"{len(result.skipped)} left as is"
            )
    except OSError as exc:
        raise UsageError(f"cannot write to {outdir}: {exc.strerror}") from exc
