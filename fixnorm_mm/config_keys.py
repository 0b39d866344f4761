"""Config keys in error messages: which keyword options a component takes, and
the valid key nearest to a typo.

An unknown key in a config dict reaches the component as an unexpected keyword
argument, and Python's ``TypeError`` then names neither the config key nor the
option that was meant. :func:`check_keys` is called before the component is
built, so the error names ``<prefix>.<key>`` and suggests the nearest valid key
(``difflib``), as ``final_layer`` and ``fixnorm-config`` typos already do.
"""
import difflib
import inspect
import re
from typing import Iterable, Mapping, Optional, Set

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_keys(cls: type) -> Optional[Set[str]]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the
    class chain; ``None`` when that cannot be told (a ``**kwargs`` that leaves
    the chain or whose keys ``__init__`` reads, a signature or source that
    cannot be read): then any key may be valid."""
    if not inspect.isclass(cls):
        return None
    names: Set[str] = set()
    for klass in inspect.getmro(cls):
        init = vars(klass).get('__init__')
        if init is None:
            continue
        if klass is object:
            return names
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in params[1:] if p.kind in _NAMED)
        var_keyword = [p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        if not var_keyword:
            return names
        if _reads_keys(init, var_keyword[0]):
            return None
    return None


def _reads_keys(init, name: str) -> bool:
    """Whether ``init`` reads keys of its ``**name`` (``kwargs.pop('x')``,
    ``kwargs['x']``, ``'x' in kwargs``) rather than only passing it on."""
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return True
    name = re.escape(name)
    return re.search(r'\b%s\s*[.\[]|\bin\s+%s\b' % (name, name), source) is not None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice, or ``''``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


def check_keys(prefix: str, given: Mapping, valid: Optional[Iterable[str]],
               owner: str) -> None:
    """Raise ``TypeError`` naming ``<prefix>.<key>`` for every key of ``given``
    that is not in ``valid``, with the nearest valid key and the list of them
    (``valid=None``, what :func:`accepted_keys` returns when it cannot tell:
    no check).

    Args:
        prefix: where the dict sits in the config, e.g.
            ``'optim_wrapper.norm_control'``.
        owner: what takes the options, for the message (``"FixNorm"``).
    """
    if valid is None:
        return
    valid = set(valid)
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    offered = sorted(valid)
    lines = [f'{prefix}.{k} is not an option of {owner}{did_you_mean(str(k), offered)}'
             for k in unknown]
    raise TypeError('\n'.join(lines) + f'\n({owner} takes: {", ".join(offered)})')
