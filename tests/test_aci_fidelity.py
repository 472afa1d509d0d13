"""ACI fidelity to MLGym: for each command, the original's observable behaviour as a table of
cases (files, the commands before, the command, the exact observation, the files after).

The expectations are MLGym's observations for the same files and commands (its editor is bash
functions over a window of W lines around a current line, with flake8 for Python files, and
its shell reader drops empty lines and tqdm progress bars from everything the agent sees; the
table was checked against them). Paths are shown as the agent sees them. Where this project
differs on purpose, the case is in docs/aci.md ("Differences from MLGym"), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mlgym.tools.aci import ACI
from mlgym.tools.aci.localshell import LocalShell

WS = "/home/agent/workspace"


def lines(m: int, n: int) -> str:
    return "".join(f"line {i}\n" for i in range(m, n + 1))


def num(n: int) -> str:
    return lines(1, n)


PY = "import os\n\n\ndef f(a):\n    x = a + 1\n    return x\n\n\nprint(f(1), os.sep)\n"
PY_LONG = PY + "".join(f"v{i} = {i}\n" for i in range(40))
PY_VIEW = ["[File: /home/agent/workspace/m.py (9 lines total)]", "1:import os", "2:", "3:",
           "4:def f(a):", "5:    x = a + 1", "6:    return x", "7:", "8:", "9:print(f(1), os.sep)"]
MANY_HITS = {f"d/f{i:03}.txt": "hit\n" for i in range(103)}

UPDATED = ("File updated. Please review the changes and make sure they are correct (correct "
           "indentation, no duplicate lines, etc). Edit the file again if necessary.")
EDIT_REFUSED = ("Your proposed edit has introduced new syntax error(s). Please read this error "
                "message carefully and then retry editing the file.")
INSERT_REFUSED = ("Your proposed insertion has introduced new syntax error(s). Please read this "
                  "error message carefully and then retry inserting into the file.")
EDIT_TAIL = [
    "Your changes have NOT been applied. Please fix your edit command and try again.",
    "You either need to 1) Specify the correct start/end line arguments or 2) Correct your "
    "edit code.",
    "DO NOT re-run the same failed edit command. Running it again will lead to the same error.",
]
INSERT_TAIL = [
    "Your changes have NOT been applied. Please fix your insert command and try again.",
    "You either need to 1) Specify the correct line number argument or 2) Correct your "
    "insertion code.",
    "DO NOT re-run the same failed insert command. Running it again will lead to the same "
    "error.",
]
RULE = "-" * 49
SCROLL_WARNING = [
    "WARNING: Scrolling many times in a row is very inefficient.",
    "If you know what you are looking for, use `search_file <pattern>` instead.",
]


@dataclass
class Case:
    name: str
    window: int
    files: dict[str, str]
    setup: list[str]
    command: str
    expect: list[str]
    after: dict[str, str] = field(default_factory=dict)  # files whose content must change so

    def __str__(self) -> str:
        return self.name

OPEN = [
    Case('whole file', 20, {'f.txt': num(5)}, [],
         'open f.txt',
         ['[File: /home/agent/workspace/f.txt (5 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5']),
    Case('long file from the top', 10, {'f.txt': num(30)}, [],
         'open f.txt',
         ['[File: /home/agent/workspace/f.txt (30 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5', '6:line 6', '7:line 7', '8:line 8', '9:line 9',
          '10:line 10', '(20 more lines below)']),
    Case('at a line: a sixth of a window below the top', 12, {'f.txt': num(100)}, [],
         'open f.txt 50',
         ['[File: /home/agent/workspace/f.txt (100 lines total)]', '(48 more lines above)',
          '49:line 49', '50:line 50', '51:line 51', '52:line 52', '53:line 53', '54:line 54',
          '55:line 55', '56:line 56', '57:line 57', '58:line 58', '59:line 59', '60:line 60',
          '(40 more lines below)']),
    Case('at a line near the end', 10, {'f.txt': num(30)}, [],
         'open f.txt 29',
         ['[File: /home/agent/workspace/f.txt (30 lines total)]', '(20 more lines above)',
          '21:line 21', '22:line 22', '23:line 23', '24:line 24', '25:line 25', '26:line 26',
          '27:line 27', '28:line 28', '29:line 29', '30:line 30']),
    Case('odd window', 7, {'f.txt': num(40)}, [],
         'open f.txt 20',
         ['[File: /home/agent/workspace/f.txt (40 lines total)]', '(18 more lines above)',
          '19:line 19', '20:line 20', '21:line 21', '22:line 22', '23:line 23', '24:line 24',
          '25:line 25', '(15 more lines below)']),
    Case('line past the end', 10, {'f.txt': num(30)}, [],
         'open f.txt 99',
         ['Warning: <line_number> (99) is greater than the number of lines in the file (30)',
          'Warning: Setting <line_number> to 30',
          '[File: /home/agent/workspace/f.txt (30 lines total)]', '(20 more lines above)',
          '21:line 21', '22:line 22', '23:line 23', '24:line 24', '25:line 25', '26:line 26',
          '27:line 27', '28:line 28', '29:line 29', '30:line 30']),
    Case('line 0', 10, {'f.txt': num(30)}, [],
         'open f.txt 0',
         ['Warning: <line_number> (0) is less than 1', 'Warning: Setting <line_number> to 1',
          '[File: /home/agent/workspace/f.txt (30 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5', '6:line 6', '7:line 7', '8:line 8', '9:line 9',
          '10:line 10', '(20 more lines below)']),
    Case('missing file', 10, {}, [],
         'open nope.txt',
         ['File nope.txt not found']),
    Case('a folder', 10, {'d/x.txt': 'x\n'}, [],
         'open d',
         ['Error: d is a directory. You can only open files. Use cd or ls to navigate '
          'directories.']),
    Case('empty file', 10, {'e.txt': ''}, [],
         'open e.txt',
         ['[File: /home/agent/workspace/e.txt (0 lines total)]']),
]

GOTO = [
    Case('moves the window', 10, {'f.txt': num(30)}, ['open f.txt'],
         'goto 25',
         ['[File: /home/agent/workspace/f.txt (30 lines total)]', '(20 more lines above)',
          '21:line 21', '22:line 22', '23:line 23', '24:line 24', '25:line 25', '26:line 26',
          '27:line 27', '28:line 28', '29:line 29', '30:line 30']),
    Case('line past the end', 10, {'f.txt': num(30)}, ['open f.txt'],
         'goto 31',
         ['Error: <line> must be less than or equal to 30']),
    Case('line 0', 10, {'f.txt': num(30)}, ['open f.txt 20'],
         'goto 0',
         ['[File: /home/agent/workspace/f.txt (30 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5', '6:line 6', '7:line 7', '8:line 8', '9:line 9',
          '10:line 10', '(20 more lines below)']),
    Case('no open file', 10, {}, [],
         'goto 3',
         ['No file open. Use the open command first.']),
]

SCROLL_DOWN = [
    Case('moves by W - 2', 10, {'f.txt': num(25)}, ['open f.txt'],
         'scroll_down',
         ['[File: /home/agent/workspace/f.txt (25 lines total)]', '(8 more lines above)',
          '9:line 9', '10:line 10', '11:line 11', '12:line 12', '13:line 13', '14:line 14',
          '15:line 15', '16:line 16', '17:line 17', '18:line 18', '(7 more lines below)']),
    Case('at the bottom: the last window again', 10, {'f.txt': num(25)}, ['open f.txt 25'],
         'scroll_down',
         ['[File: /home/agent/workspace/f.txt (25 lines total)]', '(15 more lines above)',
          '16:line 16', '17:line 17', '18:line 18', '19:line 19', '20:line 20', '21:line 21',
          '22:line 22', '23:line 23', '24:line 24', '25:line 25']),
    Case('third scroll in a row warns', 10, {'f.txt': num(40)},
         ['open f.txt', 'scroll_down', 'scroll_down'],
         'scroll_down',
         ['[File: /home/agent/workspace/f.txt (40 lines total)]', '(24 more lines above)',
          '25:line 25', '26:line 26', '27:line 27', '28:line 28', '29:line 29', '30:line 30',
          '31:line 31', '32:line 32', '33:line 33', '34:line 34', '(6 more lines below)',
          *SCROLL_WARNING]),
    Case('no open file', 10, {}, [],
         'scroll_down',
         ['No file open. Use the open command first.']),
]

SCROLL_UP = [
    Case('moves by W - 2', 10, {'f.txt': num(25)}, ['open f.txt 25'],
         'scroll_up',
         ['[File: /home/agent/workspace/f.txt (25 lines total)]', '(7 more lines above)',
          '8:line 8', '9:line 9', '10:line 10', '11:line 11', '12:line 12', '13:line 13',
          '14:line 14', '15:line 15', '16:line 16', '17:line 17', '(8 more lines below)']),
    Case('at the top: the first window again', 10, {'f.txt': num(25)}, ['open f.txt'],
         'scroll_up',
         ['[File: /home/agent/workspace/f.txt (25 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5', '6:line 6', '7:line 7', '8:line 8', '9:line 9',
          '10:line 10', '(15 more lines below)']),
]

CREATE = [
    Case('a new file has one empty line', 10, {}, [],
         'create new.py',
         ['[File: /home/agent/workspace/new.py (1 lines total)]', '1:']),
    Case('an existing file is refused and shown', 10, {'a.txt': 'x\ny\n'}, [],
         'create a.txt',
         ["Error: File 'a.txt' already exists.",
          '[File: /home/agent/workspace/a.txt (2 lines total)]', '1:x', '2:y']),
]

EDIT = [
    Case('replace lines', 20, {'f.txt': num(5)}, ['open f.txt'],
         'edit 2:3\nA\nB\nC\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (6 lines total)]', '1:line 1', '2:A', '3:B', '4:C',
          '5:line 4', '6:line 5', UPDATED],
         after={'f.txt': num(1) + 'A\nB\nC\n' + lines(4, 5)}),
    Case('end past the last line is cut there', 20, {'f.txt': num(16)}, ['open f.txt'],
         'edit 16:20\nX\nY\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (17 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:line 4', '5:line 5', '6:line 6', '7:line 7', '8:line 8', '9:line 9',
          '10:line 10', '11:line 11', '12:line 12', '13:line 13', '14:line 14', '15:line 15',
          '16:X', '17:Y', UPDATED],
         after={'f.txt': num(15) + 'X\nY\n'}),
    Case('start past the end appends', 20, {'f.txt': num(3)}, ['open f.txt'],
         'edit 9:9\nZ\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (4 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:Z', UPDATED],
         after={'f.txt': num(3) + 'Z\n'}),
    Case('an empty text deletes', 20, {'f.txt': num(5)}, ['open f.txt'],
         'edit 2:4\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (2 lines total)]', '1:line 1', '2:line 5', UPDATED],
         after={'f.txt': num(1) + 'line 5\n'}),
    Case('deleting every line leaves an empty one', 20, {'f.txt': num(2)}, ['open f.txt'],
         'edit 1:2\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (1 lines total)]', '1:', UPDATED],
         after={'f.txt': '\n'}),
    Case('first lines of a created file', 20, {}, ['create n.py'],
         'edit 1:1\nx = 1\nend_of_edit',
         ['[File: /home/agent/workspace/n.py (1 lines total)]', '1:x = 1', UPDATED]),
    Case('view of a long file after an edit', 10, {'f.txt': num(40)}, ['open f.txt'],
         'edit 20:20\nnew\nend_of_edit',
         ['[File: /home/agent/workspace/f.txt (40 lines total)]', '(14 more lines above)',
          '15:line 15', '16:line 16', '17:line 17', '18:line 18', '19:line 19', '20:new',
          '21:line 21', '22:line 22', '23:line 23', '24:line 24', '(16 more lines below)',
          UPDATED],
         after={'f.txt': num(19) + 'new\n' + lines(21, 40)}),
    Case('E111 refused: indentation not a multiple of four', 1000, {'m.py': PY}, ['open m.py'],
         'edit 5:6\n  x = a + 2\n  return x\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', '- E111 indentation is not a multiple of 4',
          '- E111 indentation is not a multiple of 4',
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:  x = a + 2', '6:  return x', '7:', '8:', '9:print(f(1), os.sep)',
          RULE, 'This is the original code before your edit', RULE, *PY_VIEW, RULE, *EDIT_TAIL]),
    Case('E999 refused: an unexpected indent', 1000, {'m.py': PY}, ['open m.py'],
         'edit 5:5\n  x = a + 2\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', '- E999 IndentationError: unexpected indent',
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:  x = a + 2', '6:    return x', '7:', '8:', '9:print(f(1), os.sep)',
          RULE, 'This is the original code before your edit', RULE, *PY_VIEW, RULE, *EDIT_TAIL]),
    Case('an old error outside the edit is not counted', 1000,
         {'m.py': PY.replace("os.sep", "os.sepx + qq")}, ['open m.py'],
         'edit 5:5\n    x = a + 2\nend_of_edit',
         ['[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + 2', '6:    return x', '7:', '8:',
          '9:print(f(1), os.sepx + qq)', UPDATED],
         after={'m.py': PY.replace("os.sep", "os.sepx + qq").replace("a + 1",
                                                                         "a + 2")}),
    Case('an old error inside the edited lines counts', 1000,
         {'m.py': PY.replace("a + 1", "a + qq")}, ['open m.py'],
         'edit 5:5\n    x = a + qq  # same\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', "- F821 undefined name 'qq'",
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + qq  # same', '6:    return x', '7:', '8:',
          '9:print(f(1), os.sep)', RULE, 'This is the original code before your edit', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + qq', '6:    return x', '7:', '8:',
          '9:print(f(1), os.sep)', RULE, *EDIT_TAIL]),
    Case('F821 refused', 1000, {'m.py': PY}, ['open m.py'],
         'edit 5:6\n    x = a + y\n    return x\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', "- F821 undefined name 'y'",
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + y', '6:    return x', '7:', '8:',
          '9:print(f(1), os.sep)', RULE, 'This is the original code before your edit', RULE,
          *PY_VIEW, RULE, *EDIT_TAIL]),
    Case('E999 refused', 1000, {'m.py': PY}, ['open m.py'],
         'edit 9:9\nprint(f(1)\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', "- E999 SyntaxError: '(' was never closed",
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (9 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + 1', '6:    return x', '7:', '8:', '9:print(f(1)', RULE,
          'This is the original code before your edit', RULE, *PY_VIEW, RULE, *EDIT_TAIL]),
    Case('refusal windows in a long file', 1000, {'m.py': PY_LONG}, ['open m.py'],
         'edit 25:27\nv = undefined_1\nw = 2\nend_of_edit',
         [EDIT_REFUSED, 'ERRORS:', "- F821 undefined name 'undefined_1'",
          'This is how your edit would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (48 lines total)]', '(19 more lines above)',
          '20:v10 = 10', '21:v11 = 11', '22:v12 = 12', '23:v13 = 13', '24:v14 = 14',
          '25:v = undefined_1', '26:w = 2', '27:v18 = 18', '28:v19 = 19', '29:v20 = 20',
          '30:v21 = 21', '31:v22 = 22', '(17 more lines below)', RULE,
          'This is the original code before your edit', RULE,
          '[File: /home/agent/workspace/m.py (49 lines total)]', '(19 more lines above)',
          '20:v10 = 10', '21:v11 = 11', '22:v12 = 12', '23:v13 = 13', '24:v14 = 14',
          '25:v15 = 15', '26:v16 = 16', '27:v17 = 17', '28:v18 = 18', '29:v19 = 19',
          '30:v20 = 20', '31:v21 = 21', '32:v22 = 22', '(17 more lines below)', RULE, *EDIT_TAIL]),
    Case('no open file', 10, {}, [],
         'edit 1:1\nx\nend_of_edit',
         ['No file open. Use the `open` command first.']),
    Case('missing end_of_edit', 10, {'f.txt': 'a\n'}, ['open f.txt'],
         'edit 1:1\nb',
         ['Malformed edit command. Please ensure you use the `end_of_edit` keyword to mark '
          'the end of your edit.']),
]

INSERT = [
    Case('after a line', 20, {'f.txt': num(3)}, ['open f.txt'],
         'insert 1\nnew\nend_of_insert',
         ['[File: /home/agent/workspace/f.txt (4 lines total)]', '1:line 1', '2:new', '3:line 2',
          '4:line 3', UPDATED],
         after={'f.txt': num(1) + 'new\n' + lines(2, 3)}),
    Case('at the top', 20, {'f.txt': num(3)}, ['open f.txt'],
         'insert 0\ntop\nend_of_insert',
         ['[File: /home/agent/workspace/f.txt (4 lines total)]', '1:top', '2:line 1', '3:line 2',
          '4:line 3', UPDATED],
         after={'f.txt': 'top\nline 1\nline 2\nline 3\n'}),
    Case('past the end appends', 20, {'f.txt': num(3)}, ['open f.txt'],
         'insert 9\nlast\nend_of_insert',
         ['[File: /home/agent/workspace/f.txt (4 lines total)]', '1:line 1', '2:line 2',
          '3:line 3', '4:last', UPDATED],
         after={'f.txt': num(3) + 'last\n'}),
    Case('E999 refused, said of an insertion', 1000, {'m.py': PY}, ['open m.py'],
         'insert 6\n        bad = 1\nend_of_insert',
         [INSERT_REFUSED, 'ERRORS:', '- E999 IndentationError: unexpected indent',
          'This is how your insertion would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (10 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + 1', '6:    return x', '7:        bad = 1', '8:', '9:',
          '10:print(f(1), os.sep)', RULE, 'This is the original code before your insertion',
          RULE, *PY_VIEW, RULE, *INSERT_TAIL]),
    Case('F821 refused', 1000, {'m.py': PY}, ['open m.py'],
         'insert 9\nprint(zzz)\nend_of_insert',
         [INSERT_REFUSED, 'ERRORS:', "- F821 undefined name 'zzz'",
          'This is how your insertion would have looked if applied', RULE,
          '[File: /home/agent/workspace/m.py (10 lines total)]', '1:import os', '2:', '3:',
          '4:def f(a):', '5:    x = a + 1', '6:    return x', '7:', '8:',
          '9:print(f(1), os.sep)', '10:print(zzz)', RULE,
          'This is the original code before your insertion', RULE, *PY_VIEW, RULE, *INSERT_TAIL]),
]

SEARCH_DIR = [
    Case('counts per file', 10,
         {'a.py': 'lr = 1\nx = lr\n', 's/b.py': 'lr = 2\n', 's/c.txt': 'no\n'}, [],
         'search_dir lr',
         ['Found 3 matches for "lr" in /home/agent/workspace:',
          '/home/agent/workspace/a.py (2 matches)', '/home/agent/workspace/s/b.py (1 matches)',
          'End of matches for "lr" in /home/agent/workspace']),
    Case('in a folder', 10, {'a.py': 'lr = 1\n', 's/b.py': 'lr = 2\n'}, [],
         'search_dir lr s',
         ['Found 1 matches for "lr" in /home/agent/workspace/s:',
          '/home/agent/workspace/s/b.py (1 matches)',
          'End of matches for "lr" in /home/agent/workspace/s']),
    Case('no match', 10, {'a.py': 'x\n'}, [],
         'search_dir zzz',
         ['No matches found for "zzz" in /home/agent/workspace']),
    Case('missing folder', 10, {'a.py': 'x\n'}, [],
         'search_dir x nowhere',
         ['Directory nowhere not found']),
    Case('more than 100 files names the count', 10, MANY_HITS, [],
         'search_dir hit',
         ['More than 103 files matched for "hit" in /home/agent/workspace. Please narrow '
          'your search.']),
]

SEARCH_FILE = [
    Case('the open file', 10, {'m.py': 'def a():\n    pass\n\ndef b(): pass\n'}, ['open m.py'],
         'search_file pass',
         ['Found 2 matches for "pass" in /home/agent/workspace/m.py:', 'Line 2:    pass',
          'Line 4:def b(): pass', 'End of matches for "pass" in /home/agent/workspace/m.py']),
    Case('a named file, whole lines', 10, {'o.txt': 'pass: yes\nno\n'}, [],
         'search_file pass o.txt',
         ['Found 1 matches for "pass" in /home/agent/workspace/o.txt:', 'Line 1:pass: yes',
          'End of matches for "pass" in /home/agent/workspace/o.txt']),
    Case('no match', 10, {'o.txt': 'x\n'}, [],
         'search_file zzz o.txt',
         ['No matches found for "zzz" in /home/agent/workspace/o.txt']),
    Case('missing file', 10, {}, [],
         'search_file x nope.txt',
         ['Usage: search_file <search_term> [<file>]',
          'Error: File name nope.txt not found. Please provide a valid file name.']),
    Case('no open file', 10, {}, [],
         'search_file x',
         ['No file open. Use the open command first.']),
]

FIND_FILE = [
    Case('a name', 10, {'a.py': '', 's/a.py': '', 's/b.txt': ''}, [],
         'find_file a.py',
         ['Found 2 matches for "a.py" in /home/agent/workspace:', '/home/agent/workspace/a.py',
          '/home/agent/workspace/s/a.py']),
    Case('in a folder', 10, {'a.py': '', 's/a.py': ''}, [],
         'find_file a.py s',
         ['Found 1 matches for "a.py" in /home/agent/workspace/s:',
          '/home/agent/workspace/s/a.py']),
    Case('no match', 10, {'a.py': ''}, [],
         'find_file z.py',
         ['No matches found for "z.py" in /home/agent/workspace']),
    Case('missing folder', 10, {'a.py': ''}, [],
         'find_file a.py nowhere',
         ['Directory nowhere not found']),
]

TABLES = {"open": OPEN, "goto": GOTO, "scroll_down": SCROLL_DOWN, "scroll_up": SCROLL_UP,
          "create": CREATE, "edit": EDIT, "insert": INSERT, "search_dir": SEARCH_DIR,
          "search_file": SEARCH_FILE, "find_file": FIND_FILE}
ALL = [pytest.param(c, id=f"{tool}: {c.name}") for tool, cases in TABLES.items() for c in cases]


@pytest.mark.parametrize("case", ALL)
async def test_observation_is_mlgyms(tmp_path, case: Case):
    root = tmp_path / "ws"
    for name, text in case.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    aci = ACI(root, shell=LocalShell(root, WS), window=case.window)
    for cmd in case.setup:
        await aci.run(cmd)
    got = await aci.run(case.command)
    assert got.output == "\n".join(case.expect)
    for name, text in {**case.files, **case.after}.items():
        assert (root / name).read_text() == text, name


@pytest.mark.parametrize(("command", "expect"), [
    ("printf 'a\\n\\nb\\n\\n\\n'", "a\nb"),  # empty lines are dropped
    ("printf 'x\\r\\ny\\n'", "x\ny"),
    ("printf 'epoch 1\\n 45%%|####5     | 45/100 [00:01<00:01, 40.0it/s]\\nloss 0.1\\n'",
     "epoch 1\nloss 0.1"),  # a tqdm progress bar is dropped
    ("printf 'Training: 100%%|##########| 10/10 [00:00<00:00]\\n'", ""),
    ("true", ""),
])
async def test_shell_output_is_delivered_as_mlgyms_reader_does(tmp_path, command, expect):
    root = tmp_path / "ws"
    root.mkdir()
    aci = ACI(root, shell=LocalShell(root, WS))
    assert (await aci.run(command)).output == expect
    raw = ACI(root, shell=LocalShell(root, WS), mlgym_output=False)
    assert (await raw.run("printf 'a\\n\\nb\\n'")).output == "a\n\nb\n"


def test_every_command_has_a_table():
    from mlgym.tools.aci.spec import BUILTIN_TOOLS

    file_tools = {t.name for t in BUILTIN_TOOLS} - {"validate", "submit", "bash"}
    assert set(TABLES) == file_tools
    assert all(len(cases) >= 2 for cases in TABLES.values())
