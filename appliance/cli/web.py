"""`kpc web`: the live web view of the rack."""

from __future__ import annotations

import logging

import typer

from appliance.cli.common import cli, listen_option, port_option, serve_until_stopped
from appliance.state.backend import open_store
from appliance.web.app import Site, auth_from_config, run


def web(
    ctx: typer.Context,
    listen: str | None = listen_option(
        "Address to bind (default: web.listen, else provisioning.address)."
    ),
    port: int | None = port_option("Port (default: web.port)."),
    read_only: bool = typer.Option(
        False, "--read-only", help="Refuse actions even when web.actions is true."
    ),
    access_log: bool = typer.Option(True, help="Log every request."),
) -> None:
    """Serve the live web view of the rack: machines, their history, kolla runs.

    Steps: load the site config; set up the login (web.password, a secret reference, or a
    reverse proxy's web.proxy_header; nothing is served without one); open the machine
    registry; serve until interrupted. Actions (boot mode, power, PXE) are offered only with
    web.actions: true, each confirmed in the page and recorded in the machine's history.
    """
    c = cli(ctx)
    config = c.config()
    auth = auth_from_config(config, c.environ)
    logging.getLogger("kpc.web").setLevel(logging.INFO)
    log = logging.getLogger("kpc.web")
    host = listen or str(config.web.listen or config.provisioning.address)
    bind_port = port or config.web.port
    actions = config.web.actions and not read_only
    store = open_store(config)
    try:
        site = Site(config, store, auth, c.environ, actions=actions)
        log.info(
            "web view on http://%s:%d (login: %s; actions %s)",
            host,
            bind_port,
            "site password" if auth.password is not None else f"header {auth.proxy_header}",
            "on" if actions else "off",
        )
        serve_until_stopped(
            "kpc web", host, bind_port, lambda: run(site, host, bind_port, access_log=access_log)
        )
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.command("web")(web)
