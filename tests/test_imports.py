"""The package's import graph: no cycles, and configs import no TensorFlow.

The graph is read from the source (every `import` statement, also inside
functions), so a cycle hidden behind a function-level import counts too.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'performer'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict[str, set[str]]:
  """{module: the performer modules it imports}, from the source.

  `from pkg import sub` depends on the module pkg.sub only; `from pkg
  import name` (a name defined in pkg/__init__.py) and `import pkg` on the
  package itself: its __init__ must have run to give the name.
  """
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [
          f'{node.module}.{alias.name}'
          if f'{node.module}.{alias.name}' in modules
          else node.module
          for alias in node.names
        ]
      else:
        continue
      edges.update(t for t in targets if t in modules and t != name)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as [a, b, ..., a], or None (depth-first search)."""
  state = {}  # 1: on the current path, 2: done.
  path = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [
    'a',
    'b',
    'c',
    'a',
  ]
  assert find_cycle({'p': {'p.m'}, 'p.m': {'p'}}) == ['p', 'p.m', 'p']


def test_the_graph_has_the_known_edges():
  graph = import_graph()
  assert 'performer.workdir' in graph['performer.generate']
  assert 'performer.data' in graph['performer.data.build']
  assert 'performer.attention' in graph['performer.model']


def test_no_import_cycle_in_performer():
  cycle = find_cycle(import_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


@pytest.mark.parametrize('module', ['performer.train', 'performer.generate'])
def test_every_module_imports_on_its_own(module):
  import importlib

  importlib.import_module(module)
