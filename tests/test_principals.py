"""Who reads which subscription, and with which budget scope (`monitor.principals`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.principals import Principal, Principals

SUBS = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(6)]
TENANTS = [f"{i:08x}-1111-4000-8000-000000000000" for i in range(3)]


def three() -> Principals:
    return Principals(
        [
            Principal(name="a", tenant_id=TENANTS[0]),
            Principal(name="b", subscriptions=(SUBS[0].upper(),), tenant_id="fabrikam.example"),
            Principal(name="c"),
        ]
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(SUBS), st.sampled_from([0, 2]), st.sampled_from(TENANTS)),
        max_size=30,
    )
)
def test_the_first_claimant_keeps_a_subscription(claims: list[tuple[str, int, str]]) -> None:
    """Whatever order principals list subscriptions in, a subscription is read by the entry
    that names it explicitly, else by the first that listed it, else by the default; its
    tenant is the last one a list gave."""
    principals = three()
    members = list(principals)
    first: dict[str, str] = {}
    tenant: dict[str, str] = {}
    for sub, index, tenant_id in claims:
        principals.claim(sub.upper(), members[index], tenant_id)
        first.setdefault(sub, members[index].name)
        tenant[sub] = tenant_id
    for sub in SUBS:
        expected = "b" if sub == SUBS[0] else first.get(sub, "a")
        assert principals.of_subscription(sub).name == expected
        assert principals.tenant_of(sub.upper()) == tenant.get(sub, _configured(expected))


def _configured(name: str) -> str | None:
    # 'a' names a GUID tenant; 'b' a domain (not a tenant id); 'c' none.
    return TENANTS[0] if name == "a" else None


def test_scopes_carry_the_principal_only_when_there_are_several() -> None:
    """One principal keeps the scopes `tenant` and `resource-graph` (and their metric labels);
    several get one scope each, and a scope finds its principal again (any casing)."""
    alone = Principals.single()
    assert alone.tenant_scope(alone.default) == "tenant"
    assert alone.graph_scope(alone.default) == "resource-graph"
    principals = three()
    b = principals.named("B")
    assert principals.tenant_scope(b) == "tenant:b"
    assert principals.graph_scope(b) == "resource-graph:b"
    assert principals.principal_for("tenant:b") is b
    assert principals.principal_for("resource-graph:b") is b
    assert principals.principal_for("tenant").name == "a"
    assert principals.principal_for(SUBS[0]) is b
    assert principals.principal_for(SUBS[1]).name == "a"
