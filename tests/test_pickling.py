"""A ``@cached`` function pickles by reference, like a plain function, and copies as itself."""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from toolkit import InMemoryCache, cached

CACHE: InMemoryCache[Any] = InMemoryCache()
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@cached("pickling.square", cache=CACHE)
def square(x: int) -> int:
    """A module-level cached function."""
    return x * x


@cached("pickling.asquare", cache=CACHE)
async def asquare(x: int) -> int:
    """A module-level cached coroutine function."""
    return x * x


class Shapes:
    """A class with every binding kind decorated."""

    def __init__(self, side: int = 1) -> None:
        self.side = side

    def __cache_key__(self) -> int:
        return self.side

    @cached("pickling.area", cache=CACHE)
    def area(self, scale: int) -> int:
        return self.side * self.side * scale

    @cached("pickling.unit", cache=CACHE)
    @classmethod
    def unit(cls, scale: int) -> str:
        return f"{cls.__name__}:{scale}"

    @cached("pickling.double", cache=CACHE)
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


class Squares(Shapes):
    """A subclass: its classmethod binds to it."""


def plain(x: int) -> int:
    """Left undecorated at module level, so a wrapper made from it is found by no name."""
    return x


def call_twice(func: Callable[[int], int], x: int) -> tuple[int, int, int]:
    """Run in a child: call the unpickled cached function twice; its result, hits, misses."""
    first, second = func(x), func(x)
    assert first == second
    info = func.cache_info()  # type: ignore[attr-defined]
    return first, info.hits, info.misses


def run_async(x: int) -> int:
    """Run in a child: the async cached function, through the child's own import of it."""
    return asyncio.run(asquare(x))


def test_module_level_functions_round_trip_as_themselves() -> None:
    for proto in PROTOCOLS:
        assert pickle.loads(pickle.dumps(square, proto)) is square
        assert pickle.loads(pickle.dumps(asquare, proto)) is asquare


def test_a_round_trip_keeps_the_cache() -> None:
    square.cache_clear()
    assert square(7) == 49
    again = pickle.loads(pickle.dumps(square))
    assert again(7) == 49
    assert again.cache_info().hits == 1


def test_methods_reached_through_their_class_round_trip() -> None:
    for proto in PROTOCOLS:
        area = pickle.loads(pickle.dumps(Shapes.area, proto))
        assert area(Shapes(3), 2) == 18
        assert pickle.loads(pickle.dumps(Shapes.unit, proto))(4) == "Shapes:4"
        assert pickle.loads(pickle.dumps(Squares.unit, proto))(4) == "Squares:4"
        assert pickle.loads(pickle.dumps(Shapes.double, proto))(5) == 10
        assert pickle.loads(pickle.dumps(Squares.double, proto))(6) == 12


def test_a_method_bound_to_an_instance_pickles_with_its_instance() -> None:
    area = pickle.loads(pickle.dumps(Shapes(2).area))
    assert area(3) == 12
    assert pickle.loads(pickle.dumps(Shapes(2).unit))(1) == "Shapes:1"


def test_copies_are_the_wrapper_itself() -> None:
    assert copy.copy(square) is square
    assert copy.deepcopy(square) is square
    assert copy.deepcopy({"f": asquare})["f"] is asquare
    bound = Shapes(2).area
    assert copy.copy(bound) is bound
    assert copy.deepcopy(bound) is bound


def _local() -> Any:
    @cached("pickling.local", cache=CACHE)
    def inner(x: int) -> int:
        return x

    return inner


def test_a_local_function_is_refused_with_the_reason() -> None:
    with pytest.raises(pickle.PicklingError) as caught:
        pickle.dumps(_local())
    message = str(caught.value)
    assert "tests.test_pickling._local.<locals>.inner" in message
    assert "defined inside a function" in message
    assert "module level" in message


def test_a_lambda_is_refused_with_the_reason() -> None:
    with pytest.raises(pickle.PicklingError, match="lambda has no name"):
        pickle.dumps(cached("pickling.lambda", cache=CACHE, key_id="lam")(lambda x: x))


def test_a_wrapper_its_name_does_not_hold_is_refused() -> None:
    with pytest.raises(pickle.PicklingError, match=r"tests\.test_pickling\.plain.*another object"):
        pickle.dumps(cached("pickling.plain", cache=CACHE)(plain))


@pytest.fixture(scope="module")
def executor() -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def test_a_spawned_process_pool_runs_cached_functions(executor: ProcessPoolExecutor) -> None:
    assert executor.submit(square, 9).result(timeout=120) == 81
    assert list(executor.map(square, [1, 2, 3], timeout=120)) == [1, 4, 9]
    assert executor.submit(Shapes.double, 21).result(timeout=120) == 42
    assert executor.submit(Squares.unit, 2).result(timeout=120) == "Squares:2"
    assert executor.submit(Shapes(2).area, 5).result(timeout=120) == 20
    assert executor.submit(run_async, 12).result(timeout=120) == 144


def test_the_child_caches_with_its_own_wrapper(executor: ProcessPoolExecutor) -> None:
    result, hits, _ = executor.submit(call_twice, square, 11).result(timeout=120)
    assert result == 121
    assert hits >= 1  # the second call in the child is served from the child's cache
