"""``clustrix doctor`` on Kubernetes: the user's own permissions in the namespace, and who else may be there.

One SelfSubjectRulesReview (every authenticated user may ask it) lists what the
credentials may do in the namespace. From it the doctor tells:

- which verbs clustrix needs and the credentials lack (a failure, naming the rule);
- whether the namespace is probably shared: the namespace ``default``, or RoleBindings
  (read when the credentials may list them) that name more than one user, or a group.
  Kubernetes does not tell a user who else holds rights in a namespace otherwise, so
  when RoleBindings cannot be read the doctor says it cannot tell. Everyone who may
  create pods or read Secrets in the namespace can run code in your client
  (docs/security.md), hence the warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from clustrix_k8s.api import KubeApi
from clustrix_k8s.options import RUNNER_ACCOUNT

#: (API group, resource, verb) the submitting user needs: docs/kubernetes-rbac.yaml.
NEEDED = (
    ("batch", "jobs", "create"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "deletecollection"),
    ("", "secrets", "create"),
    ("", "configmaps", "list"),
    ("", "pods", "list"),
    ("", "pods/log", "get"),
    ("", "serviceaccounts", "get"),
)
WARN = "warn"


def _allows(rules: Iterable[Mapping[str, Any]], group: str, resource: str, verb: str) -> bool:
    for rule in rules:
        if rule.get("resourceNames"):
            continue  # only some objects by name: not what clustrix needs
        groups, resources, verbs = (rule.get(k) or [] for k in ("apiGroups", "resources", "verbs"))
        if (
            (group in groups or "*" in groups)
            and (resource in resources or "*" in resources)
            and (verb in verbs or "*" in verbs)
        ):
            return True
    return False


def missing_verbs(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """The rules clustrix needs that ``rules`` (a SelfSubjectRulesReview's resourceRules) do not grant (pure)."""
    return [
        f'"{verb}" on "{resource}" (apiGroups: ["{group}"])'
        for group, resource, verb in NEEDED
        if not _allows(rules, group, resource, verb)
    ]


def other_subjects(bindings: Iterable[Mapping[str, Any]]) -> list[str]:
    """The people a namespace's RoleBindings name: users and groups (service accounts are workloads) (pure)."""
    found = set()
    for binding in bindings:
        for subject in binding.get("subjects") or []:
            if subject.get("kind") in ("User", "Group"):
                found.add(f"{subject['kind']} {subject.get('name')}")
    return sorted(found)


def sharing_warning(namespace: str, subjects: Sequence[str] | None) -> str | None:
    """Why the namespace looks shared (pure), or None when nothing says so."""
    reasons = []
    if namespace == "default":
        reasons.append("it is the namespace 'default', which clusters usually share")
    if subjects is not None and (len(subjects) > 1 or any(s.startswith("Group ") for s in subjects)):
        reasons.append(f"its RoleBindings name {', '.join(subjects)}")
    if not reasons:
        return None
    return (
        f"namespace {namespace!r} looks shared: {'; '.join(reasons)}. Everyone who may create pods or read "
        "Secrets in it can read your jobs' arguments, environment_variables and result keys, and forge results "
        "that run code on this machine: use a namespace of your own (docs/security.md)"
    )


def review_rules(api: KubeApi, namespace: str) -> dict[str, Any]:
    """The SelfSubjectRulesReview of the credentials in ``namespace`` (its ``status``)."""
    reply = api.post_cluster(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": namespace}},
    )
    return dict(reply.get("status") or {})


def checks(api_factory: Callable[[], KubeApi], namespace_option: Any) -> list[tuple[str, Callable[[], Any]]]:
    """``(name, check)`` pairs for ``clustrix doctor``; a check returns its detail, or ``("warn", detail)``."""
    state: dict[str, Any] = {}

    def where() -> tuple[KubeApi, str]:
        api = api_factory()
        return api, str(namespace_option or api.namespace)

    def permissions() -> str:
        api, namespace = where()
        status = review_rules(api, namespace)
        rules = status.get("resourceRules") or []
        state["rules"] = rules
        missing = missing_verbs(rules)
        if missing and not status.get("incomplete"):
            raise PermissionError(
                f"in namespace {namespace!r} your credentials lack {', '.join(missing)}: ask an administrator to "
                "bind the clustrix-submitter Role of docs/kubernetes-rbac.yaml to you"
            )
        if missing:
            return (
                f"the server could not list every rule ({status.get('evaluationError', 'incomplete')}); "
                f"not seen: {', '.join(missing)}"
            )
        runner = "" if _allows(rules, "", "serviceaccounts", "create") else f" ({RUNNER_ACCOUNT!r} must exist)"
        return f"namespace {namespace!r}: every verb clustrix needs is granted{runner}"

    def shared() -> Any:
        api, namespace = where()
        rules = state.get("rules")
        if rules is None:
            rules = review_rules(api, namespace).get("resourceRules") or []
        subjects = None
        if _allows(rules, "rbac.authorization.k8s.io", "rolebindings", "list"):
            listing = api.request("GET", "list", "rolebindings", namespace)
            subjects = other_subjects(listing.get("items") or [])
        warning = sharing_warning(namespace, subjects)
        if warning:
            return (WARN, warning)
        if subjects is None:
            return (
                WARN,
                f"cannot tell who else may use namespace {namespace!r} (you may not list its RoleBindings): make "
                "sure it is yours alone, as everyone who may create pods or read Secrets there can run code in "
                "your client",
            )
        return f"namespace {namespace!r}: its RoleBindings name only {', '.join(subjects) or 'service accounts'}"

    return [("kubernetes permissions", permissions), ("kubernetes namespace of your own", shared)]
