"""The Digital Marketplace apps and who calls whom (../shared/dmp-reference.md sections 1 and 3).

This is domain data, not configuration: it is the same in every environment. Security groups, task roles,
services and the execution role's secret list are all derived from it and from the rendered templates.
"""

from __future__ import annotations

from dataclasses import dataclass

HTTP_PORT = 8080  # the nginx `http` container: the only port that needs a security-group rule
ROUTER_PORT = 80
HTTPS = 443

FRONTENDS = (
    "buyer-frontend",
    "supplier-frontend",
    "briefs-frontend",
    "brief-responses-frontend",
    "admin-frontend",
    "user-frontend",
)


@dataclass(frozen=True)
class App:
    name: str
    port: int  # the port other tasks and the load balancer reach it on
    calls: tuple[str, ...] = ()  # other apps it calls on their `port`
    backing: tuple[str, ...] = ()  # backing services it is a client of (see BACKING_SERVICES)
    behind_load_balancer: bool = False  # frontends: the internal path router (www); router: the public entry


@dataclass(frozen=True)
class BackingService:
    """A service outside this tool (RDS, ElastiCache, OpenSearch, EFS mount targets) reached through the
    pair-of-groups pattern: the resource group admits `port` only from the clients group."""

    name: str
    port: int


BACKING_SERVICES = {
    "postgres": BackingService("postgres", 5432),
    "redis": BackingService("redis", 6379),
    "opensearch": BackingService("opensearch", 443),
    "efs": BackingService("efs", 2049),
}

APPS: dict[str, App] = {
    app.name: app
    for app in [
        App("api", HTTP_PORT, calls=("search-api",), backing=("postgres",)),
        App("search-api", HTTP_PORT, backing=("opensearch",)),
        App("antivirus-api", HTTP_PORT),
        *[
            App(
                name,
                HTTP_PORT,
                calls=("api", "search-api") if name == "buyer-frontend" else ("api",),
                backing=("redis",),
                behind_load_balancer=True,
            )
            for name in FRONTENDS
        ],
        App(
            "router",
            ROUTER_PORT,
            calls=("api", "search-api", "antivirus-api"),  # www goes through the path router (WWW_ROUTES)
            behind_load_balancer=True,
        ),
    ]
}


def callers_of(app_name: str) -> list[str]:
    """The apps that call `app_name`, sorted."""
    return sorted(a.name for a in APPS.values() if app_name in a.calls)


# How `www` is routed by path (the old platform's longest-prefix routing, checked against each frontend's own
# blueprint url_prefix in its app/__init__.py): the internal load balancer's listener rules, most specific first,
# and where every other path goes. A pattern `/buyers*` matches `/buyers` itself, `/buyers/...` and (like the old
# platform's nginx prefix `location /buyers`) `/buyersanything`; ELB path patterns are case-sensitive, like the
# frontends' Flask routes, and see only the path (never the query string).
WWW_ROUTES: tuple[tuple[str, str], ...] = (
    ("/buyers/direct-award*", "buyer-frontend"),
    ("/buyers*", "briefs-frontend"),
    ("/suppliers/opportunities*", "brief-responses-frontend"),
    ("/suppliers*", "supplier-frontend"),
    ("/admin*", "admin-frontend"),
    ("/user*", "user-frontend"),
)
WWW_DEFAULT = "buyer-frontend"
FRONTEND_HEALTH_CHECK_PATH = "/healthcheck"
ROUTER_HEALTH_CHECK_PATH = "/_status"


# The order apply rolls services out in, tier by tier (resources/services.py): a tier starts changing only once
# every rollout of the tiers before it has succeeded. The APIs first: buyer-frontend and admin-frontend call the
# api while they start, and would never turn healthy without it. The router last: nginx resolves its upstreams'
# names when it starts, and they exist only once their tasks are registered (Cloud Map). The api calls the
# search-api, but only while serving requests, so they start together.
START_ORDER: tuple[tuple[str, ...], ...] = (
    ("api", "search-api", "antivirus-api"),
    FRONTENDS,
    ("router",),
)


def start_tier(app_name: str) -> int:
    """The index of the app's tier in START_ORDER."""
    return next(i for i, tier in enumerate(START_ORDER) if app_name in tier)
