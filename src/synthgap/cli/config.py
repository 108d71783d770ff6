"""`synthgap configs`: list the packaged training configs (`synthgap.config.packaged_configs`) and print one."""

from __future__ import annotations

import click


def _recipe_summary(text: str) -> str:
    """A packaged recipe's first comment sentence (its header says what it is for)."""
    first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
    return first.split(": ")[0].rstrip(".:")


@click.group(invoke_without_command=True)
@click.pass_context
def configs(ctx):
    """List the packaged training configs (the names --config takes), or print one with `configs show NAME`.

    \b
    Example:
        synthgap configs
        synthgap configs show cpu_small --resolved
    """
    if ctx.invoked_subcommand is not None:
        return
    from synthgap.config import load_config, packaged_configs
    from synthgap.config.load import read_source

    names = packaged_configs()
    width = max(len(n) for n in names)
    models = {name: load_config(name).model.name for name in names}
    model_width = max(len(m) for m in models.values())
    click.echo("packaged configs (synthgap train --config NAME; synthgap configs show NAME):")
    for name in names:
        click.echo(f"  {name:<{width}}  {models[name]:<{model_width}}  {_recipe_summary(read_source(name))}")


@configs.command("show")
@click.argument("name")
@click.option("--resolved", is_flag=True,
              help="Print every key with its value after the defaults are filled in (what a run records in "
                   "config.yaml). Default: the packaged file as shipped, comments included.")
def configs_show(name, resolved):
    """Print the packaged config NAME (YAML): a starting point for your own --config file."""
    from synthgap.config import dump_config, load_config, packaged_configs
    from synthgap.config.load import read_source

    if name not in packaged_configs():
        raise click.BadParameter(f"no packaged config {name!r}; packaged: {', '.join(packaged_configs())}",
                                 param_hint="NAME")
    click.echo(dump_config(load_config(name)) if resolved else read_source(name), nl=False)
