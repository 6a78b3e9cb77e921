"""The Widget's report, question and datastore panels (a mixin of MedVLSlicerWidget).

Qt is used only through the `qt` module Slicer provides (imported when called); every
network call goes through the Widget's `_run` (worker thread), every MRML change happens
here on the main thread. Needs the Widget's `ui`, `logic`, `_parameterNode`, `_run`,
`_status`, `_guard`, `_updateButtons`.
"""

from __future__ import annotations

import os

from . import protocol, report_html, report_view
from .errors import MedVLSlicerError
from .i18n import _
from .assist import backend_text
from .state import quality_summary


class AssistWidgetMixin:
    _report = None  # last report answer: {"json", "markdown", "html"}
    _datastore = ()  # last datastore listing (list of assist.DatastoreImage)
    _openedImage = ""  # datastore id of the image opened from the datastore ("" = none)

    def setupAssist(self) -> None:
        self.ui.reportTextBrowser.connect("anchorClicked(QUrl)", self.onFindingClicked)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.ui.saveDicomSrButton.connect("clicked(bool)", self.onSaveDicomSr)
        self.ui.askButton.connect("clicked(bool)", self.onAsk)
        self.ui.questionLineEdit.connect("returnPressed()", self.onAsk)
        self.ui.refreshDatastoreButton.connect("clicked(bool)", self.onRefreshDatastore)
        self.ui.nextImageButton.connect("clicked(bool)", self.onNextImage)
        self.ui.openImageButton.connect("clicked(bool)", self.onOpenImage)

    def updateAssistButtons(self, busy: bool) -> None:
        server, state = self.logic.server, self.logic.state
        canAsk = server is not None and protocol.VQA_TASK in server.models and state is not None
        self.ui.questionLineEdit.enabled = canAsk
        self.ui.askButton.enabled = canAsk and not busy
        self.ui.exportReportButton.enabled = self._report is not None
        why = self._noDicomSr()
        self.ui.saveDicomSrButton.enabled = not busy and not why
        self.ui.saveDicomSrButton.toolTip = why or _("Save the report as a DICOM SR with its DICOM SEG "
                                                     "(referencing the image's DICOM series) in a folder")
        self.ui.refreshDatastoreButton.enabled = server is not None and not busy
        self.ui.nextImageButton.enabled = server is not None and not busy
        self.ui.openImageButton.enabled = server is not None and not busy and self.ui.datastoreListWidget.count > 0

    # --- answers ---------------------------------------------------------------------------------
    def _showAnswer(self, obj) -> None:
        answer, lat = self.logic.state.last_answer, self.logic.state.latencies
        self._status(_("{name}: {voxels} voxels, slices {range}, {ml} mL ({action})").format(
            name=obj.name, voxels=obj.voxels, range=answer.get("slice_range"), ml=answer.get("volume_ml"),
            action=answer.get("action", "")) + ("  ·  " + quality_summary(answer) if answer.get("quality") else ""))
        warnings = (answer.get("quality") or {}).get("warnings") or []
        self.ui.statusLabel.toolTip = "\n".join(w.get("message", "") for w in warnings)
        engine = (answer.get("engine") or {}).get("name") or "engine"
        self.ui.latencyLabel.setText(_("server {total:.2f} s ({engine} {infer:.2f} s) · round trip {rt:.2f} s").format(
            total=lat.get("total") or 0.0, engine=engine, infer=lat.get("infer") or 0.0, rt=lat.get("round_trip") or 0.0))
        self.ui.latencyLabel.toolTip = (answer.get("engine") or {}).get("model", "")
        language = backend_text(answer.get(protocol.R_LANGUAGE))  # text prompts: who grounded the text
        if language:
            self.ui.statusLabel.setText(self.ui.statusLabel.text + "  ·  " + _("language: {backend}").format(
                backend=language))

    # --- report ------------------------------------------------------------------------------------
    def onReport(self) -> None:
        self.logic.set_modality(self._parameterNode.modality)

        def work(cancelled):
            result = self.logic.send_report(should_cancel=cancelled)
            return result, self.logic.fetch_report_file(result, "overview")

        self._run(_("Writing the report ..."), work, lambda answer: self._showReport(*answer))

    def _showReport(self, result, overview) -> dict:
        """Main thread: render a report answer (table, overview, links) and name its language backend."""
        markdown = self.logic.apply_report(result)
        facts = result.params.get(protocol.R_REPORT_JSON) or {}
        volume, _segmentation = self.logic.nodes()
        html = report_html.report_html(facts, [overview] if overview else [], markdown, tr=_, title=volume.GetName())
        backend = backend_text(result.params.get(protocol.R_LANGUAGE) or facts.get(protocol.R_LANGUAGE),
                               str(facts.get(protocol.R_NARRATOR) or ""))
        self._report = {"json": facts, "markdown": markdown, "html": html, "backend": backend}
        self.ui.reportTextBrowser.setHtml(html)
        self.ui.reportCollapsibleButton.collapsed = False
        self._status(_("Report: {n} finding(s) (language: {backend}); click one to show it.").format(
            n=len(facts.get("objects") or []), backend=backend or "-"))
        self._updateButtons()
        return facts

    def _noDicomSr(self) -> str:
        """Why "Save DICOM SR..." cannot run now (one line), or "" when it can."""
        if self._report is None:
            return _("Generate a report first.")
        volume = self.logic.nodes()[0] if self.logic.state is not None else None
        if not self.logic.dicom_image(volume):
            return _("A DICOM SR references the image's DICOM series: open a DICOM-backed image from the server's "
                     "datastore (Next image / Open), then generate the report.")
        return ""

    def onSaveDicomSr(self) -> None:
        import qt

        why = self._noDicomSr()
        if why:
            self._status(why, error=True)
            return
        folder = qt.QFileDialog.getExistingDirectory(None, _("Save DICOM SR and SEG to folder"), "")
        if folder:
            self.saveDicomSr(folder)

    def saveDicomSr(self, folder: str) -> None:
        """Ask the report again with its DICOM SR + SEG (the server checks the image has a series), show
        it, and save report.sr.dcm and report.seg.dcm in `folder`."""
        image = self.logic.dicom_image(self.logic.nodes()[0])

        def work(cancelled):
            result = self.logic.send_report(should_cancel=cancelled, dicom_image=image)
            return result, self.logic.fetch_report_file(result, "overview"), self.logic.fetch_dicom_sr(result, folder)

        def done(answer):
            result, overview, saved = answer
            self._showReport(result, overview)
            self._status(_("DICOM SR saved in {folder}: {sr} and its SEG {seg}").format(
                folder=folder, sr=os.path.basename(saved["sr"]), seg=os.path.basename(saved["seg"])))

        self._run(_("Writing the DICOM SR of {image} ...").format(image=image), work, done)

    def onFindingClicked(self, url) -> None:
        index = report_html.parse_finding_link(url.toString())
        if index is None or self._report is None:
            return
        self._guard(lambda: self.showFinding(index))

    def showFinding(self, index: int) -> dict:
        """Slice views to finding `index`, its segment selected, its axes as line markups."""
        facts = report_html.finding(self._report["json"], index)
        volume, segmentation = self.logic.nodes()
        obj = report_view.finding_object(self._report["json"], index, self.logic.state.objects)
        shown = report_view.show_finding(facts, volume, segmentation, obj.name if obj is not None else "")
        self._status(_("{label}: slice {k}; long and short axis drawn as line markups.").format(
            label=facts.get("label") or facts.get("name"), k=facts["key_slice_k"]))
        return shown

    def onExportReport(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(None, _("Export report"), "report.md",
                                              _("Markdown (*.md);;HTML (*.html);;PDF (*.pdf)"))
        path = path[0] if isinstance(path, (tuple, list)) else path
        if path:
            self._guard(lambda: self.exportReport(path))

    def exportReport(self, path: str) -> str:
        """Write the shown report: .md (the server's Markdown), .html, or .pdf (Qt's printer)."""
        if self._report is None:
            raise MedVLSlicerError(_("no report yet: press Generate report first"))
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".pdf":
            import qt

            printer = qt.QPrinter()
            printer.setOutputFormat(qt.QPrinter.PdfFormat)
            printer.setOutputFileName(path)
            document = qt.QTextDocument()
            document.setHtml(self._report["html"])
            document.print_(printer) if hasattr(document, "print_") else document.print(printer)
        elif suffix in (".md", ".html", ".htm"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(self._report["markdown"] if suffix == ".md" else self._report["html"])
        else:
            raise MedVLSlicerError(_("export to .md, .html or .pdf, not {path}").format(path=path))
        self._status(_("Report saved to {path}").format(path=path))
        return path

    # --- questions --------------------------------------------------------------------------------
    def onAsk(self) -> None:
        question = self.ui.questionLineEdit.text

        def done(result):
            answer = self.logic.apply_answer(result)
            self.ui.answerLabel.setText(_("{answer}\n(answered by {backend}; {task}, intent: {intent})").format(
                answer=answer["answer"], backend=answer["backend"], task=answer["task"],
                intent=answer["intent"] or "-"))
            self.ui.answerLabel.setStyleSheet("" if answer["answerable"] else "color: #a04000")
            self._status(_("Answered."))

        self._run(_("Asking ..."), lambda cancelled: self.logic.send_question(question, should_cancel=cancelled), done)

    # --- datastore --------------------------------------------------------------------------------
    def onRefreshDatastore(self, then=None) -> None:
        def done(images):
            self._datastore = images
            widget = self.ui.datastoreListWidget
            widget.clear()
            for im in images:
                widget.addItem(("\u2713 " if im.labelled else "   ") + im.image_id)
            labelled = sum(im.labelled for im in images)
            self.ui.datastoreLabel.setText(_("{labelled} of {total} images labelled").format(
                labelled=labelled, total=len(images)))
            if then is not None:
                then()

        self._run(_("Listing the datastore ..."), lambda cancelled: self.logic.list_datastore(), done)

    def onNextImage(self) -> None:
        def openNext():
            image = self.logic.next_unlabelled(list(self._datastore), self._openedImage)
            if image is None:
                self._status(_("Every image of the datastore has a final label."))
                return
            self._open(image)

        self.onRefreshDatastore(then=openNext)

    def onOpenImage(self) -> None:
        row = self.ui.datastoreListWidget.currentRow
        if row is None or not 0 <= row < len(self._datastore):
            self._status(_("Select an image in the list first."), error=True)
            return
        self._open(self._datastore[row])

    def _open(self, image) -> None:
        def done(path):
            volume = self.logic.load_image(path, image.image_id)
            self._openedImage = image.image_id
            if self.logic.state is not None:
                self.logic.forget()
            self._parameterNode.segmentation = None
            self._parameterNode.inputVolume = volume
            self._showPrompts(None)
            self._status(_("Opened {image}: place prompts and press Segment; Accept saves its label.").format(
                image=image.image_id))

        self._run(_("Downloading {image} ...").format(image=image.image_id),
                  lambda cancelled: self.logic.download_image(image), done)
