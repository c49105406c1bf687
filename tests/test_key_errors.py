"""Key errors that help: advice fitted to the value's type, and ``key=`` arity misfits."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from toolkit import InMemoryCache, cached
from toolkit.integrations.langgraph import key_func
from toolkit.keys import derive_key


def takes(value: Any) -> None:
    """A function whose one parameter receives the value under test."""


def key_error(value: Any) -> str:
    with pytest.raises(TypeError) as caught:
        derive_key(takes, (value,))
    message = str(caught.value)
    assert "parameter 'value' of takes" in message
    return message


class Mine:
    """A user's class: it can gain a ``__cache_key__``."""


def helper(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "value",
    [helper, lambda x: x, len, functools.partial(helper, 1), "".join],
    ids=["def", "lambda", "builtin", "partial", "method"],
)
def test_a_function_gets_function_advice(value: Any) -> None:
    message = key_error(value)
    assert "pass its name" in message
    assert "key=" in message and "ignore=('value',)" in message
    assert "__cache_key__" not in message


def test_a_module_gets_module_advice() -> None:
    message = key_error(os)
    assert "module's name" in message and "__cache_key__" not in message


def test_an_open_file_gets_path_advice(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x")
    with path.open() as text, path.open("rb") as binary:
        for handle in (text, binary):
            message = key_error(handle)
            assert "pass its path" in message and "__cache_key__" not in message


def test_a_socket_gets_resource_advice() -> None:
    with socket.socket() as sock:
        message = key_error(sock)
    assert "live resource" in message and "ignore=('value',)" in message
    assert "__cache_key__" not in message


@pytest.mark.parametrize(
    "make",
    [threading.Lock, threading.RLock, threading.Semaphore, threading.Condition, asyncio.Lock],
)
def test_a_lock_gets_leave_it_out_advice(make: Callable[[], Any]) -> None:
    message = key_error(make())
    assert "A lock" in message and "ignore=('value',)" in message
    assert "__cache_key__" not in message


def test_a_thread_event_gets_resource_advice() -> None:
    message = key_error(threading.Event())
    assert "live resource" in message and "__cache_key__" not in message


def test_a_generator_gets_list_advice() -> None:
    message = key_error(x for x in range(3))
    assert "list or tuple" in message and "__cache_key__" not in message
    assert "list or tuple" in key_error(iter([1]))


def test_a_coroutine_gets_await_advice() -> None:
    async def work() -> int:
        return 1

    pending = work()
    try:
        message = key_error(pending)
    finally:
        pending.close()
    assert "await it" in message and "__cache_key__" not in message


def test_a_plain_object_of_the_standard_library_gets_conversion_advice() -> None:
    message = key_error(object())
    assert "supported value" in message and "__cache_key__" not in message


def test_a_third_party_object_gets_wrapping_advice() -> None:
    message = key_error(CollectorRegistry())
    assert "key=" in message and "your own class with a __cache_key__" in message


def test_a_users_class_keeps_the_cache_key_advice() -> None:
    message = key_error(Mine())
    assert "give tests.test_key_errors.Mine a __cache_key__(self)" in message


def test_advice_is_for_the_value_inside_a_container() -> None:
    message = key_error([1, {"cb": helper}])
    assert "(it contains a function)" in message and "pass its name" in message


def test_a_closure_over_a_lock_is_not_told_to_add_cache_key() -> None:
    lock = threading.Lock()

    def guarded(x: int) -> int:
        with lock:
            return x

    with pytest.raises(TypeError) as caught:
        cached("guarded", cache=InMemoryCache())(guarded)
    assert "key_id=" in str(caught.value)
    assert "__cache_key__" not in str(caught.value)


# -- key= arity ---------------------------------------------------------------------------


def test_a_key_function_with_too_few_parameters_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError) as caught:

        @cached(cache=InMemoryCache(), key=lambda x: x)
        def pair(a: int, b: int) -> int:
            return a + b

    message = str(caught.value)
    assert "key= function <lambda>(x) of" in message and "pair" in message
    assert "pair(a, b) calls it as key(a, b)" in message
    assert "too many positional arguments" in message


def test_a_method_key_function_without_self_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"key\(self, q\).*self or cls first"):

        class Service:
            @cached(cache=InMemoryCache(), key=lambda q: q)
            def answer(self, q: str) -> str:
                return q


def test_a_key_function_missing_an_optional_parameter_is_refused() -> None:
    with pytest.raises(TypeError, match=r"key\(a\).*missing a required argument: 'b'"):

        @cached(cache=InMemoryCache(), key=lambda a, b: a)
        def f(a: int, b: int = 2) -> int:
            return a


def test_key_functions_that_fit_are_accepted() -> None:
    cache = InMemoryCache()

    @cached(cache=cache, key=lambda *args, **kwargs: args[0])
    def f(a: int, b: int = 2, *, c: int = 3) -> int:
        return a + b + c

    @cached(cache=cache, key=lambda self, q: q)
    def method(self: Any, q: str) -> str:
        return q

    assert f(1) == f(1, 5) == 6  # keyed on a alone: the second call is the first's hit
    assert method(object(), "x") == "x"


def test_a_call_time_binding_failure_names_the_key_function() -> None:
    @cached(cache=InMemoryCache(), key=lambda a, b: (a, b))
    def f(a: int, b: int, **extra: Any) -> int:
        return a + b

    with pytest.raises(TypeError) as caught:
        f(1, 2, flag=True)
    message = str(caught.value)
    assert "key= function <lambda>(a, b) of" in message and "f" in message
    assert "key(a, b, flag=...)" in message
    assert "unexpected keyword argument 'flag'" in message


def test_an_error_inside_the_key_function_is_left_alone() -> None:
    def broken_key(a: int) -> int:
        raise TypeError("broken inside")

    @cached(cache=InMemoryCache(), key=broken_key)
    def f(a: int) -> int:
        return a

    with pytest.raises(TypeError, match=r"^broken inside$"):
        f(1)


def test_a_call_that_fits_neither_names_the_decorated_function() -> None:
    @cached(cache=InMemoryCache(), key=lambda a: a)
    def f(a: int) -> int:
        return a

    with pytest.raises(TypeError, match=r"f\(\): too many positional arguments"):
        f(1, 2)  # type: ignore[call-arg]


# -- LangGraph's key_func ---------------------------------------------------------------


def test_langgraph_key_func_gives_the_same_fitted_advice() -> None:
    with pytest.raises(TypeError) as caught:
        key_func({"lock": threading.Lock()})
    message = str(caught.value)
    assert "key_func cannot derive a cache key" in message and "_thread.lock" in message
    assert "A lock" in message and "a key_func of your own that skips it" in message
    assert "__cache_key__" not in message
    with pytest.raises(TypeError, match=r"give tests\.test_key_errors\.Mine a __cache_key__"):
        key_func({"x": Mine()})
    with pytest.raises(TypeError, match=r"CachePolicy\(key_func=\.\.\.\)"):
        key_func(1, task=helper)  # a task's arguments
