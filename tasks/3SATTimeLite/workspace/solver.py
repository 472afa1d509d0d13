"""A DPLL SAT solver whose branching decisions come from `heuristic_fn` (heuristic.py).

This file is read-only: the evaluation uses the task's pristine copy. Improve the solver's
speed by improving the heuristic.

solve(clauses, heuristic_fn) -> (satisfiable, assignment or None)
  clauses: list of clauses, each a list of non-zero ints (DIMACS literals: 3 means x3 is true,
  -3 means x3 is false).

The heuristic is called at every branching point as
  heuristic_fn(clauses, assignments, conflict_count, assignment_history, level)
(the arguments of MLGym's 3-SAT task):
  clauses             the clauses no literal of which is true yet, as given (a literal that is
                      false already is still in its clause: filter with `abs(lit) not in
                      assignments`);
  assignments         {variable: bool}, the current partial assignment;
  conflict_count      {variable: int}, how many conflicts assigning each variable caused;
  assignment_history  [variable, ...], every assignment of the solve in order (decisions and
                      propagations, kept across backtracking);
  level               [[decision variable, variables it implied, ...], ...], one list per
                      decision on the current branch (empty at the root).
It returns (variable, value): an unassigned variable that occurs in the clauses and the bool
value to try first (a negative variable -v means v with the opposite value); the solver tries
that value, then the other. (None, value) gives up the current branch.
"""

import sys


class HeuristicError(Exception):
    """The heuristic returned something the solver cannot use."""


class Solver:
    def __init__(self, clauses, heuristic_fn):
        self.original = [list(c) for c in clauses]
        self.heuristic_fn = heuristic_fn
        self.conflict_count = {}
        self.history = []
        self.level = []
        self.decisions = 0

    def assign(self, clauses, literal):
        """Clauses after making `literal` true (satisfied ones dropped, the false literal
        removed), or None when one becomes empty: a conflict, counted for the variable."""
        out = []
        for clause in clauses:
            if literal in clause:
                continue
            if -literal in clause:
                clause = [x for x in clause if x != -literal]
                if not clause:
                    v = abs(literal)
                    self.conflict_count[v] = self.conflict_count.get(v, 0) + 1
                    return None
            out.append(clause)
        return out

    def set(self, assignments, literal):
        assignments[abs(literal)] = literal > 0
        self.history.append(abs(literal))
        if self.level:
            self.level[-1].append(abs(literal))

    def propagate(self, clauses, assignments):
        """Unit propagation and pure literals; None on a conflict."""
        while True:
            unit = next((c[0] for c in clauses if len(c) == 1), None)
            if unit is None:
                seen = {lit for c in clauses for lit in c}
                unit = next((lit for lit in seen if -lit not in seen), None)
                if unit is None:
                    return clauses
            self.set(assignments, unit)
            clauses = self.assign(clauses, unit)
            if clauses is None:
                return None

    def dpll(self, clauses, assignments):
        clauses = self.propagate(clauses, assignments)
        if clauses is None:
            return None
        if not clauses:
            return assignments
        true = {v if value else -v for v, value in assignments.items()}
        shown = [c for c in self.original if true.isdisjoint(c)]  # no literal true yet
        # copies, so a heuristic cannot break the search (the history only grows: it is shared)
        choice = self.heuristic_fn(shown, dict(assignments), dict(self.conflict_count),
                                   self.history, [list(d) for d in self.level])
        literal = self.check(choice, clauses, assignments)
        if literal is None:
            return None
        self.decisions += 1
        for lit in (literal, -literal):
            self.level.append([])
            branch_assignments = dict(assignments)
            self.set(branch_assignments, lit)
            branch = self.assign(clauses, lit)
            result = None if branch is None else self.dpll(branch, branch_assignments)
            self.level.pop()
            if result is not None:
                return result
        return None

    @staticmethod
    def check(choice, clauses, assignments):
        """The literal to try first, from (variable, value); None to give up the branch."""
        if not isinstance(choice, (tuple, list)) or len(choice) != 2:
            raise HeuristicError(f"heuristic_fn must return (variable, value), got {choice!r}"[:200])
        variable, value = choice
        if variable is None:
            return None
        if isinstance(variable, bool) or not hasattr(variable, "__index__"):
            raise HeuristicError(f"variable must be an int, got {variable!r}"[:200])
        if type(value).__name__ not in ("bool", "bool_"):
            raise HeuristicError(f"value must be a bool, got {value!r}"[:200])
        variable, value = int(variable), bool(value)
        if variable < 0:
            variable, value = -variable, not value
        if variable in assignments or not any(variable in (abs(x) for x in c) for c in clauses):
            raise HeuristicError(f"variable {variable} is assigned already or does not occur in "
                                 "the clauses")
        return variable if value else -variable


def solve(clauses, heuristic_fn):
    """(True, assignment) for a satisfiable formula, (False, None) otherwise."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    solver = Solver(clauses, heuristic_fn)
    result = solver.dpll([list(c) for c in solver.original], {})
    return (result is not None), result
