from citybrain.cases import service


def test_patrol_report_files_and_dispatches(cdb, who, org):
    with cdb.write() as s:
        c = service.report(s, principal=who("gridworker"), source="patrol", title="暴露垃圾", category_code="06010",
                           lon=113.55, lat=22.78, grid_code="440115001001001", auto_file=True)
        assert c.status == "dispatched"
        assert c.dept_org_id == org("D-CGJ")
        assert c.unit_org_id == org("440115001")
