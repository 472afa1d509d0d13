"""The branching heuristic of the DPLL solver in solver.py: this is the file to improve.

Keep the name and signature of heuristic_fn. It must return (variable, value): an unassigned
variable that occurs in `clauses`, and the bool value to try first.
"""

import random


def heuristic_fn(clauses, assignments, conflict_count, assignment_history, level):
    """Baseline: a pseudo-random unassigned variable (fixed seed, so runs are repeatable),
    tried with the value True first.

    clauses: the clauses not satisfied yet, as given (lists of ints; literals already false
        are still there)
    assignments: {variable: bool} assigned so far
    conflict_count: {variable: number of conflicts it took part in so far}
    assignment_history: [variable, ...] in the order they were assigned (whole solve)
    level: [[decision variable, variables it implied, ...], ...] on the current branch
    """
    rng = random.Random(10)
    variables = sorted({abs(lit) for clause in clauses for lit in clause
                        if abs(lit) not in assignments})
    variable = rng.choice(variables)
    return variable, True
