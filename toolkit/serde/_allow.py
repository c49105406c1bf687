"""The allow-list of classes the safe serializer may revive, and how their state moves.

A registered class travels as its wire name plus data. Enums revive through
``cls(value)``; every other class through ``object.__new__(cls)`` followed by
``object.__setattr__`` of each stored attribute (its ``__dict__`` entries and slot
values), the way ``copy`` restores state. No ``__init__``, ``__post_init__``,
validator, ``__reduce__`` or ``__setstate__`` runs, so the revived object is exactly
the stored one. Pydantic models keep their fields set, extras and private values
because those live in pydantic's own slots.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import types
from dataclasses import dataclass
from typing import Any, TypeVar

from toolkit._fork import ForkSafeLock

T = TypeVar("T", bound=type)

# Classes allowed by exact name when their package is installed: LangChain messages and
# the LangGraph types found in node writes (``task.writes`` holds ``Send`` for pushes and
# ``Overwrite`` for reducer bypasses; ``Send.timeout`` is a ``TimeoutPolicy``). Only
# these fixed modules are ever imported, and only when a name from this table is seen.
_MESSAGE_NAMES = ("AI", "Human", "System", "Tool", "Function", "Chat")
_GENERATIONS = ("Generation", "GenerationChunk", "ChatGeneration", "ChatGenerationChunk")
BUILTIN_CLASSES: dict[str, tuple[str, ...]] = {
    "langchain_core.messages": (
        *(f"{kind}Message" for kind in _MESSAGE_NAMES),
        *(f"{kind}MessageChunk" for kind in _MESSAGE_NAMES),
        "RemoveMessage",
    ),
    "langchain_core.documents": ("Document",),
    "langchain_core.outputs": (*_GENERATIONS, "LLMResult", "ChatResult"),
    "langgraph.types": (
        "Send",
        "Command",
        "Interrupt",
        "Overwrite",
        "TimeoutPolicy",
        "RetryPolicy",
        "CachePolicy",
    ),
}
BUILTIN_NAMES = frozenset(
    f"{module}:{attr}" for module, attrs in BUILTIN_CLASSES.items() for attr in attrs
)
_BUILTIN_PACKAGES = ("langchain_core", "langgraph")


@dataclass(frozen=True)
class ClassInfo:
    """How one allowed class is named on the wire and how its state is read and written."""

    name: str
    cls: type
    is_enum: bool
    slots: frozenset[str]
    has_dict: bool
    fields: tuple[str, ...] | None = None
    """A named tuple's field names; its state is then the list of its items."""
    members: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    """Each slot's own member descriptor: read and written through it, never through a
    property (or other descriptor) of the same name that a subclass defines."""

    def capture(self, obj: Any) -> Any:
        """Return the attributes that make up ``obj``'s state (a named tuple's items)."""
        if self.fields is not None:
            if self.has_dict and obj.__dict__:
                # Only the items travel: attributes set on the instance would vanish.
                raise TypeError(
                    f"cannot serialize {self.name} with instance attributes "
                    f"{sorted(obj.__dict__)}: a named tuple stores its items only "
                    "(give the class __slots__ = () or make them fields)"
                )
            return list(obj)
        state: dict[str, Any] = dict(obj.__dict__) if self.has_dict else {}
        for slot, member in self.members.items():
            try:
                state[slot] = member.__get__(obj, self.cls)
            except AttributeError:
                continue  # an unset slot stays unset
        return state

    def revive(self, state: Any) -> Any:
        """Build an instance from stored state by field assignment (no user code runs)."""
        if self.fields is not None:
            if type(state) is not list or len(state) != len(self.fields):
                raise TypeError(f"state of {self.name} must be a list of {len(self.fields)} items")
            return tuple.__new__(self.cls, state)
        if type(state) is not dict:
            raise TypeError(f"state of {self.name} must be a dict, got {type(state).__name__}")
        for attr in state:
            if not self._settable(attr):
                raise ValueError(f"{self.name} has no attribute {attr!r} to restore")
        obj: Any = object.__new__(self.cls)
        # Straight into the instance dict and the slots, as capture() read them: setattr
        # would run a property's setter (user code) named by the stored bytes.
        members = self.members
        # Without an instance dict, _settable let through slots only: never this empty one.
        attrs: dict[str, Any] = obj.__dict__ if self.has_dict else {}
        for attr, value in state.items():
            member = members.get(attr)
            if member is not None:
                member.__set__(obj, value)
            else:
                attrs[attr] = value
        return obj

    def _settable(self, attr: object) -> bool:
        if type(attr) is not str:
            return False
        if attr in self.slots:
            return True
        # Dunder names (``__class__``, ``__dict__``) would reshape the object, not fill it.
        return (
            self.has_dict
            and attr.isidentifier()
            and not (attr.startswith("__") and attr.endswith("__"))
        )


def class_info(cls: type, name: str) -> ClassInfo:
    """Check that ``cls`` can be revived safely and describe it."""
    if not isinstance(cls, type):
        raise TypeError(f"register() takes a class, got {cls!r}")
    if issubclass(cls, enum.Enum):
        return ClassInfo(name, cls, True, frozenset(), False)
    if is_named_tuple(cls):
        fields = tuple(cls._fields)  # type: ignore[attr-defined]
        return ClassInfo(name, cls, False, frozenset(), _has_dict(cls), fields)
    builtin_bases = [base for base in cls.__mro__[:-1] if base.__module__ == "builtins"]
    if builtin_bases:
        raise TypeError(
            f"cannot register {cls.__qualname__}: it derives from the built-in "
            f"{builtin_bases[0].__name__}; only Enums, dataclasses, pydantic models "
            "and plain classes can be revived safely"
        )
    members = _slot_members(cls)
    return ClassInfo(name, cls, False, frozenset(members), _has_dict(cls), members=members)


def is_named_tuple(cls: type) -> bool:
    """Whether ``cls`` is a ``namedtuple``/``NamedTuple`` class (a tuple with named fields)."""
    fields = getattr(cls, "_fields", None)
    return (
        issubclass(cls, tuple)
        and type(fields) is tuple
        and all(type(field) is str for field in fields)
        and all(base.__module__ != "builtins" or base in (tuple, object) for base in cls.__mro__)
    )


def is_data_class(cls: type) -> bool:
    """Whether ``cls`` is a record type an application stores: enum, dataclass, pydantic
    model or named tuple (never an arbitrary class whose state may live outside Python)."""
    if issubclass(cls, enum.Enum) or is_named_tuple(cls) or dataclasses.is_dataclass(cls):
        return True
    return any(
        base.__name__ == "BaseModel" and base.__module__.split(".", 1)[0] == "pydantic"
        for base in cls.__mro__
    )


def _slot_members(cls: type) -> dict[str, Any]:
    """Each slot name (mangled if private) and the member descriptor its owner created."""
    members: dict[str, Any] = {}
    for owner in reversed(cls.__mro__):
        slots = owner.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{owner.__name__.lstrip('_')}{slot}"  # private slots are name-mangled
            member = owner.__dict__.get(slot)
            if isinstance(member, types.MemberDescriptorType):
                members[slot] = member
    return members


def _has_dict(cls: type) -> bool:
    return any("__dict__" in vars(owner) for owner in cls.__mro__ if owner is not object)


def wire_name(cls: type) -> str:
    """Return the name a registered class travels under."""
    return f"{cls.__module__}:{cls.__qualname__}"


class AllowList:
    """Classes that may be revived, by wire name and exact type; a parent list adds its own."""

    def __init__(self, parent: AllowList | None = None) -> None:
        self._by_name: dict[str, ClassInfo] = {}
        self._by_type: dict[type, ClassInfo] = {}
        self._parent = parent
        self._lock = ForkSafeLock()

    def add(self, cls: type, *, name: str | None = None) -> ClassInfo:
        """Allow ``cls``; a different class already holding its wire name is an error."""
        info = class_info(cls, name or wire_name(cls))
        with self._lock:
            held = self._by_name.get(info.name)
            if held is not None and held.cls is not cls:
                raise ValueError(
                    f"another class is already registered as {info.name!r}: {held.cls!r}"
                )
            self._by_name[info.name] = info
            self._by_type.setdefault(cls, info)
        return info

    def learn(self, cls: type) -> ClassInfo:
        """Allow ``cls``, replacing a class of the same wire name (a redefined class)."""
        info = class_info(cls, wire_name(cls))
        with self._lock:
            self._by_name[info.name] = info
            self._by_type[cls] = info
        return info

    def by_type(self, cls: type) -> ClassInfo | None:
        """Return the entry for exactly ``cls`` (subclasses are not implied)."""
        allow: AllowList | None = self
        while allow is not None:
            info = allow._by_type.get(cls)
            if info is not None:
                return info
            allow = allow._parent
        if cls.__module__.split(".", 1)[0] in _BUILTIN_PACKAGES:
            return _builtins()._by_type.get(cls)
        return None

    def by_name(self, name: str) -> ClassInfo | None:
        """Return the entry stored under exactly ``name``, importing nothing for unknown names."""
        allow: AllowList | None = self
        while allow is not None:
            info = allow._by_name.get(name)
            if info is not None:
                return info
            allow = allow._parent
        if name in BUILTIN_NAMES:
            return _builtins()._by_name.get(name)
        return None


_builtin_list: AllowList | None = None
_builtin_lock = ForkSafeLock()


def _builtins() -> AllowList:
    """Import the fixed LangChain/LangGraph classes once, skipping packages not installed."""
    global _builtin_list
    if _builtin_list is None:
        with _builtin_lock:
            if _builtin_list is None:
                found = AllowList()
                for module_name, attrs in BUILTIN_CLASSES.items():
                    try:
                        module = importlib.import_module(module_name)
                    except ImportError:
                        continue
                    for attr in attrs:
                        cls = getattr(module, attr, None)
                        if isinstance(cls, type):
                            found.add(cls, name=f"{module_name}:{attr}")
                _builtin_list = found
    return _builtin_list


LEARNED = AllowList()
"""Record classes (enums, dataclasses, pydantic models, named tuples) this process has stored:
revivable in this process only, since their code is already imported here."""

DEFAULT_ALLOW = AllowList(parent=LEARNED)
"""The process-wide allow-list that ``register`` fills and every ``SafeSerializer`` consults."""


def register(cls: T) -> T:
    """Allow ``cls`` (Enum, dataclass, pydantic model, plain class) to be revived; a decorator."""
    DEFAULT_ALLOW.add(cls)
    return cls
