"""一网统管 事件中心: case categories, responsibility matrix, intake, workflow, deadlines, supervision, evaluation."""
