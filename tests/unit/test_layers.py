"""The opening docstring is the map of heartbeat.py, and this test holds it to the code: the layers
the map lists are the file's layer banners, in order; every sub-banner names the layer it sits in,
and every top-level definition sits under one;
a top-level definition uses only names defined in its own layer or above it (a call back up goes
through a typing.Protocol handed to the constructor, so it names no later layer); a `_private`
name is used only inside its layer."""
import ast
import re

from paths import HEARTBEAT

LAYER_BANNER = re.compile(r"^# (\d+)\. ([A-Z][A-Z/ ]*): ")     # '# 4. KERNEL I/O: UDP media, ...'
SUB_BANNER = re.compile(r"^# #### ([^:#]+)")                     # '# #### Kernel I/O: rtnetlink ####'
MAP_LINE = re.compile(r"^ {2,4}(\d+)\. (\S+(?: \S+)*?) {2,}\S")   # '    4. kernel I/O    UDP media, ...'


def defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)]


def read():
    with open(HEARTBEAT) as f:
        source = f.read()
    return source, ast.parse(source)


def layer_banners(source):
    """[(line number, layer number, layer name)] in file order."""
    found = []
    for lineno, line in enumerate(source.splitlines(), 1):
        match = LAYER_BANNER.match(line)
        if match:
            found.append((lineno, int(match.group(1)), match.group(2).lower()))
    return found


def layer_at(banners, lineno):
    """The layer number a line sits in; 0 above the first banner (imports, __version__)."""
    return max([number for at, number, _ in banners if at <= lineno], default=0)


def test_the_map_lists_the_layer_banners_in_order():
    source, tree = read()
    listed = [(int(m.group(1)), m.group(2).lower()) for line in ast.get_docstring(tree).splitlines()
              if (m := MAP_LINE.match(line))]
    banners = [(number, name) for _, number, name in layer_banners(source)]
    assert listed == banners
    assert [number for number, _ in banners] == list(range(1, len(banners) + 1))


def test_every_sub_banner_names_its_layer_and_every_definition_sits_under_one():
    source, tree = read()
    banners = layer_banners(source)
    names = {number: name for _, number, name in banners}
    lines = source.splitlines()
    wrong = [(lineno, line) for lineno, line in enumerate(lines, 1)
             if (m := SUB_BANNER.match(line)) and m.group(1).lower() != names.get(layer_at(banners, lineno))]
    assert wrong == []
    sub_banners = [lineno for lineno, line in enumerate(lines, 1) if SUB_BANNER.match(line)]
    loose = [node.lineno for node in tree.body if layer_at(banners, node.lineno)
             and max([at for at in sub_banners if at < node.lineno], default=0) < layer_at_line(banners, node.lineno)]
    assert loose == []


def layer_at_line(banners, lineno):
    """The line of the layer banner a line sits under."""
    return max(at for at, _, _ in banners if at <= lineno)


def test_each_layer_uses_only_the_layers_above_it():
    source, tree = read()
    banners = layer_banners(source)
    layer_of = {name: layer_at(banners, node.lineno) for node in tree.body for name in defined_names(node)}
    upward, private = [], []
    for node in tree.body:
        here = layer_at(banners, node.lineno)
        for used in ast.walk(node):
            if not isinstance(used, ast.Name) or used.id not in layer_of:
                continue
            if layer_of[used.id] > here:
                upward.append((node.lineno, used.id))
            if used.id.startswith("_") and not used.id.startswith("__") and layer_of[used.id] != here:
                private.append((node.lineno, used.id))
    assert upward == [] and private == []
